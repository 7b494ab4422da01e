"""The dequantized-GGUF cache: a ``.gguf`` model is dequantized once and kept as safetensors.

Loading a GGUF file through ``transformers`` parses its metadata, rebuilds the tokenizer and
dequantizes every tensor on every run (about 15 s for the quickstart's SmolLM2-135M on 2 cores, much
more for bigger files). The first load writes the result -- ``config.json``, float32
``model.safetensors``, the tokenizer files -- into

    $QCKIT_CACHE/gguf/<key>/        (QCKIT_CACHE defaults to $XDG_CACHE_HOME/qckit, else ~/.cache/qckit)

and every later load reads that directory instead. ``<key>`` is a sha256 over the file's *content*
(its sha256, computed on each load: about 0.1 s per 100 MB), the ``transformers`` and ``gguf``
versions that did the conversion and :data:`CACHE_FORMAT`, so an edited file or an upgraded
converter gets a new entry. float32 holds every dequantized value exactly, so the cached weights are
bit-identical to a fresh dequantization (loading in bf16/fp16 then rounds them as a direct load would).
An entry is written beside its final name and renamed when complete; two processes filling the same
entry at once both succeed and one copy is kept. ``QCKIT_CACHE=off`` disables the cache. Entries are
never removed by qckit: delete the directory to reclaim the space (about 4 bytes per parameter). A
``gguf`` folder or an entry that is a link is refused (one line naming it): an entry is replaced by
renaming it aside and deleting it, which must never reach another directory.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from qckit._fs import atomic_write_json, file_sha256, refuse_link, replace_dir, staging_dir

__all__ = ["CACHE_ENV", "CACHE_FORMAT", "SOURCE_NAME", "CachedGguf", "cache_root", "gguf_cache_entry"]

#: the environment variable naming qckit's cache root (``off`` disables the cache)
CACHE_ENV = "QCKIT_CACHE"
#: bump when the layout or the content of an entry changes
CACHE_FORMAT = 1
#: the file in each entry that records where it came from
SOURCE_NAME = "qckit_gguf_source.json"
_OFF = {"off", "0", "false", "no", "none"}


@dataclass(frozen=True)
class CachedGguf:
    """A cache entry: the model directory and whether it was already there (``hit``) or just written."""

    directory: Path
    hit: bool


def cache_root() -> Path | None:
    """qckit's cache root (see the module docstring), or ``None`` when ``QCKIT_CACHE=off``."""
    value = os.environ.get(CACHE_ENV, "").strip()
    if value.lower() in _OFF:
        return None
    if value:
        return Path(value).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "qckit"


def _entry_key(content_sha256: str) -> str:
    import gguf
    import transformers

    parts = [f"format={CACHE_FORMAT}", f"sha256={content_sha256}", f"transformers={transformers.__version__}"]
    parts.append(f"gguf={getattr(gguf, '__version__', '') or _dist_version('gguf')}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def _dist_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "?"


def gguf_cache_entry(gguf_file: str | Path, fill: Callable[[Path], None]) -> CachedGguf | None:
    """The cache entry of ``gguf_file``, written by ``fill(directory)`` when missing; ``None`` when disabled.

    ``fill`` saves the dequantized model and its tokenizer (``save_pretrained``) into the directory it
    is given; it runs in a fresh staging directory that becomes the entry only when ``fill`` returns.
    """
    root = cache_root()
    if root is None:
        return None
    path = Path(gguf_file)
    content = file_sha256(path)
    entry = root / "gguf" / _entry_key(content)
    for place in (entry.parent, entry):
        if place.is_symlink():
            raise refuse_link(place, f"set {CACHE_ENV} to another folder")
    if (entry / SOURCE_NAME).is_file():
        return CachedGguf(entry, hit=True)
    with staging_dir(entry) as tmp:
        fill(tmp)
        atomic_write_json(
            tmp / SOURCE_NAME,
            {"gguf_file": str(path), "sha256": content, "size": path.stat().st_size, "format": CACHE_FORMAT},
        )
        # a complete entry written meanwhile by another process is as good; a damaged one is replaced
        replace_dir(tmp, entry, keep_existing=(entry / SOURCE_NAME).is_file())
    return CachedGguf(entry, hit=False)
