"""The file format of shard results: :class:`~qckit.prepare.work.BatchResult` objects as data, never pickle.

A shard's results file lies in the work directory (``<output>/.qckit/work/``, shared storage on a
cluster) and is read back by the driver, also by a later run with ``resume``: anyone who can write
there could plant one, so reading it may only ever build data. The file is::

    MAGIC, then per batch:  <u8 JSON length> <u8 blob length> JSON blob

The JSON holds the fields of the batch result; the values JSON has no type for are objects of one
key that point into the blob: ``{"b": [offset, length]}`` bytes, ``{"a": [dtype, shape, offset,
length]}`` a numpy array, ``{"n": [dtype, offset, length]}`` a numpy scalar, ``{"A": [dtype, shape,
offset, length, nones]}`` a list of same-shaped arrays (and ``None``) stored as one, ``{"I": [dtype,
offset, length]}`` a long list of ints (line numbers, exact-dedup keys) as a 64-bit array, ``{"t":
[...]}`` a tuple and ``{"d": {...}}`` a dict (so every JSON object is one of these, and user data
never reads as one). Numeric dtypes only (bool, int, uint, float, complex).

:func:`read_results` checks everything before a value is handed on -- the magic, the lengths against
the file, each tag, each dtype and shape against its bytes, each field's type and the lengths that
must agree (lines, texts, fingerprints, formatted lines) -- and raises ``ValueError`` saying what is
wrong; the caller names the file. What a stateful filter's ``fingerprint`` returns must be built of
the values above (:func:`write_result` raises :class:`UnstorableFingerprint` otherwise, and
``TypeError`` naming the field for another field).
"""

from __future__ import annotations

import io
import json
import math
import re
import struct
from collections.abc import Iterator
from typing import IO, Any

import numpy as np

from qckit.components import IssueLog
from qckit.prepare.work import BatchResult

__all__ = ["MAGIC", "UnstorableFingerprint", "read_results", "read_values", "write_result", "write_value"]

#: the first bytes of a results file (the ``1`` is the format's version)
MAGIC = b"qckit-shard-results 1\n"
_HEAD = struct.Struct("<QQ")
#: numeric dtypes only, as ``dtype.str`` spells them: byte order, kind, item size
_DTYPE = re.compile(r"[<>|][biufc](1|2|4|8|16)")
_INT_FIELDS = ("set_index", "file_index", "nbytes", "records", "documents")
#: lists stored as JSON gives them: every value an int, or every value a str (or none at all)
_PLAIN_COLUMNS: tuple[set[type], ...] = ({int}, {str}, set())
#: from this length on, a list of ints is stored as a 64-bit array (tag ``I``)
_INT_COLUMN_MIN = 16
_INT_COLUMN_DTYPES = ("<u8", "<i8")
_CONTAINERS = (list, dict)


# -- writing ---------------------------------------------------------------------------------------


def write_value(handle: IO[bytes], value: Any) -> None:
    """Append one value built of data (see the module docstring) to ``handle``, framed like a batch: the
    prepare spool's records use this format too (:func:`read_values` reads them back)."""
    blobs = _Blobs()
    _write_frame(handle, _encode(value, blobs, "value"), blobs)


def _write_frame(handle: IO[bytes], fields: Any, blobs: _Blobs) -> None:
    text = json.dumps(fields, ensure_ascii=False, allow_nan=True, separators=(",", ":")).encode()
    handle.write(_HEAD.pack(len(text), blobs.size))
    handle.write(text)
    for part in blobs.parts:
        handle.write(part)


def write_result(handle: IO[bytes], result: BatchResult) -> None:
    """Append one batch result to ``handle`` (opened on a file that starts with :data:`MAGIC`)."""
    blobs = _Blobs()
    fields: dict[str, Any] = {}
    for name in BatchResult.__dataclass_fields__:
        if name == "kept":  # the driver's decision, made after reading
            continue
        value = getattr(result, name)
        if name == "issues":
            value = _log_dict(value)
        elif name == "drops":
            value = {k: _log_dict(log) for k, log in value.items()}
        elif name == "fingerprints":
            fields[name] = [_fingerprints(i, prints, blobs) for i, prints in enumerate(value)]
            continue
        fields[name] = _encode(value, blobs, name)
    _write_frame(handle, fields, blobs)


class UnstorableFingerprint(TypeError):
    """The fingerprints of the ``index``-th stateful filter hold something else than data."""

    def __init__(self, index: int, message: str) -> None:
        super().__init__(message)
        self.index = index


def _fingerprints(index: int, prints: list[Any], blobs: _Blobs) -> Any:
    try:
        return _encode(prints, blobs, f"fingerprints[{index}]")
    except TypeError as exc:
        raise UnstorableFingerprint(index, str(exc)) from None


class _Blobs:
    """The binary parts of one batch, in order, and where the next one starts."""

    def __init__(self) -> None:
        self.parts: list[memoryview] = []
        self.size = 0

    def add(self, data: bytes | np.ndarray) -> list[int]:
        """``[offset, length]`` of ``data`` (bytes, or an array's bytes in C order)."""
        if isinstance(data, np.ndarray):
            view = np.ascontiguousarray(data).reshape(-1).view(np.uint8).data
        else:
            view = memoryview(data)
        offset, self.size = self.size, self.size + view.nbytes
        self.parts.append(view)
        return [offset, view.nbytes]


def _log_dict(log: IssueLog) -> dict[str, Any]:
    """An IssueLog (the only object of a batch result besides arrays) as a dict; :func:`_issue_log` back."""
    return {"counts": log.counts, "examples": log.examples, "max_examples": log.max_examples}


def _encode(value: Any, blobs: _Blobs, where: str) -> Any:
    kind = type(value)
    if value is None or kind in (bool, int, float, str):
        return value
    if kind is list:
        types = _types(value)
        if types == {int} and len(value) >= _INT_COLUMN_MIN:
            column = _int_column(value, blobs)
            if column is not None:
                return column
        if types in _PLAIN_COLUMNS:
            return value  # the common columns (texts, short lists of numbers) as they are
        stacked = _stack(value, blobs)
        if stacked is not None:
            return stacked
        return [_encode(v, blobs, f"{where}[{i}]") for i, v in enumerate(value)]
    if kind is tuple:
        return {"t": [_encode(v, blobs, f"{where}[{i}]") for i, v in enumerate(value)]}
    if kind is dict:
        if not all(type(k) is str for k in value):
            raise TypeError(
                f"{where}: a dict with keys other than strings cannot be stored in a shard result"
            )
        return {"d": {k: _encode(v, blobs, f"{where}.{k}") for k, v in value.items()}}
    if kind is bytes:
        return {"b": blobs.add(value)}
    if isinstance(value, np.ndarray) and _DTYPE.fullmatch(value.dtype.str):
        return {"a": [value.dtype.str, list(value.shape), *blobs.add(value)]}
    if isinstance(value, np.generic) and _DTYPE.fullmatch(value.dtype.str):
        return {"n": [value.dtype.str, *blobs.add(np.asarray(value))]}
    raise TypeError(
        f"{where}: a {kind.__name__} cannot be stored in a shard result (data only: None, bool, int, "
        "float, str, bytes, lists, tuples, dicts with string keys, numeric numpy arrays and scalars)"
    )


def _int_column(values: list[int], blobs: _Blobs) -> dict[str, Any] | None:
    """A long list of ints (line numbers, exact-dedup keys) as a 64-bit array: 8 bytes each instead of up
    to 20 digits of JSON, read back as Python ints in one step. ``None`` when they do not fit."""
    low, high = min(values), max(values)
    unsigned, signed = _INT_COLUMN_DTYPES
    if low >= 0 and high < 1 << 64:
        dtype = unsigned
    elif low >= -(1 << 63) and high < 1 << 63:
        dtype = signed
    else:
        return None
    return {"I": [dtype, *blobs.add(np.array(values, dtype=dtype))]}


def _stack(values: list[Any], blobs: _Blobs) -> dict[str, Any] | None:
    """A list of numpy arrays of one dtype and shape (``None`` among them) as one array, or ``None``
    when it is not such a list (MinHash fingerprints: one small array per document)."""
    arrays = [v for v in values if v is not None]
    if not arrays or not all(type(a) is np.ndarray for a in arrays):
        return None
    first = arrays[0]
    if not _DTYPE.fullmatch(first.dtype.str) or any(
        a.dtype != first.dtype or a.shape != first.shape for a in arrays
    ):
        return None
    stacked = np.stack(arrays)
    nones = [i for i, v in enumerate(values) if v is None]
    return {"A": [first.dtype.str, list(stacked.shape), *blobs.add(stacked), nones]}


# -- reading ---------------------------------------------------------------------------------------


def read_results(handle: io.BufferedIOBase, size: int) -> Iterator[BatchResult]:
    """The batch results of a file of ``size`` bytes, in order; ``ValueError`` saying what is wrong
    with it (nothing but data is ever built from it)."""
    yield from _frames(handle, size, MAGIC, _result, "qckit shard results")


def read_values(handle: io.BufferedIOBase, size: int, magic: bytes, what: str) -> Iterator[Any]:
    """The values :func:`write_value` appended to a file of ``size`` bytes that starts with ``magic``
    (``what`` names the kind of file in errors)."""
    yield from _frames(
        handle, size, magic, lambda fields, parts, index: _decode(fields, parts, f"record {index}"), what
    )


def _frames(handle: io.BufferedIOBase, size: int, magic: bytes, build: Any, what: str) -> Iterator[Any]:
    if handle.read(len(magic)) != magic:
        raise ValueError(f"not a {what} file (no magic line)")
    position, index = len(magic), 0
    while position < size:
        head = handle.read(_HEAD.size)
        if len(head) != _HEAD.size:
            raise ValueError(f"batch {index}: truncated")
        text_len, blob_len = _HEAD.unpack(head)
        position += _HEAD.size + text_len + blob_len
        if position > size:
            raise ValueError(f"batch {index}: its lengths run past the end of the file")
        text = handle.read(text_len)
        if len(text) != text_len:
            raise ValueError(f"batch {index}: truncated")
        parts = _Parts(handle, blob_len)
        try:
            fields = json.loads(text)
            result = build(fields, parts, index)
        except RecursionError:  # JSON nested deeper than any batch result is
            raise ValueError(f"batch {index}: nested too deeply") from None
        except json.JSONDecodeError as exc:
            raise ValueError(f"batch {index}: not JSON ({exc})") from None
        if parts.position != blob_len:
            raise ValueError(f"batch {index}: {blob_len - parts.position} bytes that no value uses")
        yield result
        index += 1


class _Parts:
    """The binary parts of one batch, read from the file in the order they were written (the order in
    which the values that point to them are decoded), each copied once."""

    def __init__(self, handle: io.BufferedIOBase, size: int) -> None:
        self.handle, self.size, self.position = handle, size, 0

    def take(self, offset: int, length: int, where: str, *, writable: bool = False) -> bytes | bytearray:
        if offset != self.position or offset + length > self.size:
            raise ValueError(f"{where}: not where the next part of its batch is")
        data: bytes | bytearray
        if writable:  # arrays: their user may change them, as ones made in a worker
            data = bytearray(length)
            got = self.handle.readinto(data)
        else:
            data = self.handle.read(length)
            got = len(data)
        if got != length:
            raise ValueError(f"{where}: truncated")
        self.position += length
        return data


def _result(fields: Any, parts: _Parts, index: int) -> BatchResult:
    where = f"batch {index}"
    names = [n for n in BatchResult.__dataclass_fields__ if n != "kept"]
    if not isinstance(fields, dict) or sorted(fields) != sorted(names):
        raise ValueError(f"{where}: not the fields of a batch result")
    values = {name: _decode(fields[name], parts, f"{where}.{name}") for name in names}
    _check_types(values, where)
    values["issues"] = _issue_log(values["issues"], f"{where}.issues")
    values["drops"] = {k: _issue_log(v, f"{where}.drops.{k}") for k, v in values["drops"].items()}
    return BatchResult(**values)


def _decode(value: Any, parts: _Parts, where: str) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, list):
        if _types(value).isdisjoint(_CONTAINERS):
            return value  # numbers and strings as JSON gave them (the common columns)
        return [_decode(v, parts, f"{where}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, dict) or len(value) != 1:
        raise ValueError(f"{where}: not a stored value")
    ((tag, args),) = value.items()
    if tag == "d" and isinstance(args, dict):
        return {k: _decode(v, parts, f"{where}.{k}") for k, v in args.items()}
    if tag == "t" and isinstance(args, list):
        return tuple(_decode(v, parts, f"{where}[{i}]") for i, v in enumerate(args))
    if tag == "b" and _ints(args, 2):
        return parts.take(args[0], args[1], where)
    if tag == "a" and isinstance(args, list) and len(args) == 4 and _ints(args[2:], 2):
        return _array(args[0], args[1], parts, args[2], args[3], where)
    if tag == "I" and isinstance(args, list) and len(args) == 3 and _ints(args[1:], 2):
        if args[0] not in _INT_COLUMN_DTYPES:
            raise ValueError(f"{where}: not a 64-bit integer dtype ({args[0]!r})")
        return _array(args[0], [args[2] // 8], parts, args[1], args[2], where).tolist()
    if tag == "n" and isinstance(args, list) and len(args) == 3 and _ints(args[1:], 2):
        return _array(args[0], [], parts, args[1], args[2], where)[()]
    if tag == "A" and isinstance(args, list) and len(args) == 5 and _ints(args[2:4], 2):
        dtype, shape, offset, length, nones = args
        if not isinstance(shape, list) or not shape:
            raise ValueError(f"{where}: bad shape {shape!r}")
        out: list[Any] = list(_array(dtype, shape, parts, offset, length, where))
        if not isinstance(nones, list) or not _types(nones) <= {int} or nones != sorted(set(nones)):
            raise ValueError(f"{where}: bad positions of None")
        for i in nones:
            if not 0 <= i <= len(out):
                raise ValueError(f"{where}: bad positions of None")
            out.insert(i, None)
        return out
    raise ValueError(f"{where}: not a stored value (tag {tag!r})")


def _ints(values: Any, n: int) -> bool:
    return isinstance(values, list) and len(values) == n and all(type(v) is int and v >= 0 for v in values)


def _dtype(spelled: Any, where: str) -> np.dtype:
    if not isinstance(spelled, str) or not _DTYPE.fullmatch(spelled):
        raise ValueError(f"{where}: not a numeric dtype ({spelled!r})")
    return np.dtype(spelled)


def _count(shape: Any, where: str) -> int:
    if not isinstance(shape, list) or not all(type(n) is int and n >= 0 for n in shape):
        raise ValueError(f"{where}: bad shape {shape!r}")
    return math.prod(shape)  # exact: a shape that overflows int64 cannot pass for a few bytes


def _array(spelled: Any, shape: Any, parts: _Parts, offset: int, length: int, where: str) -> np.ndarray:
    dtype = _dtype(spelled, where)
    count = _count(shape, where)
    if count * dtype.itemsize != length:
        raise ValueError(f"{where}: {length} bytes for a {dtype} array of shape {tuple(shape)}")
    data = parts.take(offset, length, where, writable=True)
    return np.frombuffer(data, dtype=dtype, count=count).reshape(shape)


def _types(values: list[Any]) -> set[type]:
    """The types in ``values`` (C loops: a batch's columns hold thousands of values)."""
    return set(map(type, values))


def _is_int_list(value: Any) -> bool:
    return isinstance(value, list) and _types(value) <= {int}


def _is_str_list(value: Any) -> bool:
    return isinstance(value, list) and _types(value) <= {str}


def _check_types(v: dict[str, Any], where: str) -> None:
    """The field types of a batch result, and the lengths that must agree (one per kept document)."""

    def require(ok: bool, field: str, what: str) -> None:
        if not ok:
            raise ValueError(f"{where}.{field}: {what}")

    for name in _INT_FIELDS:
        require(type(v[name]) is int and v[name] >= 0, name, "not a count")
    require(type(v["source"]) is str, "source", "not a string")
    require(_is_int_list(v["changed"]), "changed", "not a list of counts")
    require(_is_int_list(v["lines"]), "lines", "not a list of line numbers")
    n = len(v["lines"])
    require(isinstance(v["drops"], dict), "drops", "not a table of filters")
    texts = v["texts"]
    require(texts is None or (_is_str_list(texts) and len(texts) == n), "texts", "not one text per document")
    metas = v["metas"]
    require(
        metas is None
        or (
            isinstance(metas, list)
            and len(metas) == n
            and all(m is None or isinstance(m, dict) for m in metas)
        ),
        "metas",
        "not one tag table per document",
    )
    require(_is_str_list(v["metric_keys"]), "metric_keys", "not a list of names")
    values = v["metric_values"]
    require(
        (values is None and not v["metric_keys"])
        or (
            isinstance(values, np.ndarray)
            and values.dtype == np.float64
            and values.shape == (n, len(v["metric_keys"]))
        ),
        "metric_values",
        "not a float64 table [documents, metric keys]",
    )
    prints = v["fingerprints"]
    require(
        isinstance(prints, list) and all(isinstance(p, list) and len(p) == n for p in prints),
        "fingerprints",
        "not one fingerprint per document for each stateful filter",
    )
    require(
        isinstance(v["rejected"], list)
        and all(
            isinstance(r, tuple) and len(r) == 4 and type(r[0]) is int and all(type(s) is str for s in r[1:])
            for r in v["rejected"]
        ),
        "rejected",
        "not a list of (line, filter, reason, text)",
    )
    sizes = v["text_bytes"]
    require(
        isinstance(sizes, np.ndarray) and sizes.dtype == np.int64 and sizes.shape == (n,),
        "text_bytes",
        "not one int64 size per document",
    )
    formatted = v["formatted"]
    require(
        formatted is None
        or (
            isinstance(formatted, list)
            and all(
                isinstance(f, tuple)
                and len(f) == 2
                and isinstance(f[0], bytes)
                and isinstance(f[1], np.ndarray)
                and f[1].dtype == np.int64
                and f[1].shape == (n,)
                and bool((f[1] >= 0).all())
                and int(f[1].sum()) == len(f[0])
                for f in formatted
            )
        ),
        "formatted",
        "not one line per document for each writer, of the lengths given",
    )


def _issue_log(value: Any, where: str) -> IssueLog:
    ok = (
        isinstance(value, dict)
        and sorted(value) == ["counts", "examples", "max_examples"]
        and type(value["max_examples"]) is int
        and isinstance(value["counts"], dict)
        and all(type(c) is int and c >= 0 for c in value["counts"].values())
        and isinstance(value["examples"], dict)
        and all(_is_str_list(e) for e in value["examples"].values())
    )
    if not ok:
        raise ValueError(f"{where}: not a table of issue counts and examples")
    log = IssueLog(value["max_examples"])
    log.counts, log.examples = value["counts"], value["examples"]
    return log
