"""``python -m qckit.cli.reference (--write | --check) README.md``: README's generated recipe keys.

The block between the markers of :mod:`qckit.recipe_reference` is rewritten from the settings
(``--write``), or compared with them (``--check``: exit 1 when it differs). A maintainer's command, kept
out of ``qckit --help``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from qckit._fs import atomic_write_text
from qckit.recipe_reference import recipe_reference, replace_block


def main(argv: list[str] | None = None) -> int:
    """``--write FILE`` rewrites FILE's generated block; ``--check FILE`` exits 1 when it differs."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] not in ("--write", "--check"):
        sys.stderr.write("usage: python -m qckit.cli.reference (--write | --check) README.md\n")
        return 2
    path = Path(args[1])
    try:
        text = path.read_text(encoding="utf-8")
        new = replace_block(text, recipe_reference(), str(path))
    except (OSError, ValueError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    if args[0] == "--check":
        if new != text:
            sys.stderr.write(f"{path}: the recipe keys differ from the settings; run --write {path}\n")
            return 1
        return 0
    if new != text:
        atomic_write_text(path, new)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
