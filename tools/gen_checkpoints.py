#!/usr/bin/env python3
"""Generate edge-case and hostile PyTorch checkpoint fixtures for tost's reader.

Python 3.11 standard library only; torch is NOT needed and never imported. The
files imitate what ``torch.save`` writes, byte for byte where it matters:

* zip format (PyTorch >= 1.6): ``<archive>/data.pkl`` (pickle protocol 2 unless
  a case says otherwise), ``<archive>/data/<key>`` raw storages stored
  uncompressed with their data 64-byte aligned through an ``FB`` padding extra
  field (as PyTorch's miniz writer does), ``.format_version``,
  ``.storage_alignment``, ``byteorder``, ``version``, ``.data/serialization_id``;
  optionally with zip64 records.
* legacy format (PyTorch < 1.6): magic number, protocol 1001, sys info, the
  object (persistent ids are 6-tuples ending in ``view_metadata``), the sorted
  list of storage keys, then per key an 8-byte LE element count and raw bytes.

Tensors are pickled the way torch pickles them: ``_rebuild_tensor_v2(storage,
offset, size, stride, requires_grad, OrderedDict())`` through a stand-in
``torch`` package registered in ``sys.modules`` so that ``pickle`` writes the
genuine ``GLOBAL 'torch._utils _rebuild_tensor_v2'`` references; storages go
through ``persistent_id`` as ``('storage', torch.FloatStorage, key, location,
numel)``. Cases that need opcodes Python's pickler never writes (INST, OBJ,
LONG, STRING, EXT1, PERSID, ...) are assembled by hand.

The expected tensors (dtype, shape, materialised contiguous little-endian
bytes in hex) are computed here from the generator's own source element
arrays, never by reading the written files back.

Also writes ``real_expected/<fixture>.json``: every tensor of the two real
fixture checkpoints, materialised by a restricted stdlib unpickler and hashed
(SHA-256), for the tests of the real fixtures.

Usage (from the repository root)::

    python3 tools/gen_checkpoints.py            # writes tests/fixtures/checkpoints/

Everything is deterministic: running it twice gives identical files.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import io
import json
import math
import os
import pickle
import pickletools
import random
import struct
import sys
import types
import zipfile
import zlib
from dataclasses import dataclass
from typing import Any, Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(ROOT, "tests", "fixtures", "checkpoints")
REAL_FIXTURES = ["tost_vision_small.pth", "tost_lang_small.pt"]

# ---------------------------------------------------------------------------
# dtypes

DTYPES: dict[str, tuple[str, int]] = {
    # safetensors dtype: (torch storage class, element size)
    "F64": ("DoubleStorage", 8),
    "F32": ("FloatStorage", 4),
    "F16": ("HalfStorage", 2),
    "BF16": ("BFloat16Storage", 2),
    "I64": ("LongStorage", 8),
    "I32": ("IntStorage", 4),
    "I16": ("ShortStorage", 2),
    "I8": ("CharStorage", 1),
    "U8": ("ByteStorage", 1),
    "BOOL": ("BoolStorage", 1),
}
STORAGE_TO_DTYPE = {cls: dt for dt, (cls, _) in DTYPES.items()}

# ---------------------------------------------------------------------------
# A stand-in `torch` package so that pickle writes genuine torch GLOBALs.

torch_mod = types.ModuleType("torch")
torch_utils_mod = types.ModuleType("torch._utils")
torch_mod._utils = torch_utils_mod  # type: ignore[attr-defined]
sys.modules.setdefault("torch", torch_mod)
sys.modules.setdefault("torch._utils", torch_utils_mod)


def _rebuild_tensor_v2(*_args: Any) -> None:  # never called: only pickled by name
    raise RuntimeError("stand-in")


def _rebuild_parameter(*_args: Any) -> None:
    raise RuntimeError("stand-in")


for _fn in (_rebuild_tensor_v2, _rebuild_parameter):
    _fn.__module__ = "torch._utils"
    setattr(torch_utils_mod, _fn.__name__, _fn)

STORAGE_CLASSES: dict[str, type] = {}
for _name in [c for c, _ in DTYPES.values()] + ["ComplexFloatStorage", "QInt8Storage"]:
    _cls = type(_name, (), {"__module__": "torch"})
    setattr(torch_mod, _name, _cls)
    STORAGE_CLASSES[_name] = _cls

# torch.cuda.*Storage: what GPU tensors saved by old PyTorch name in their persistent ids
torch_cuda_mod = types.ModuleType("torch.cuda")
torch_mod.cuda = torch_cuda_mod  # type: ignore[attr-defined]
sys.modules.setdefault("torch.cuda", torch_cuda_mod)
CUDA_STORAGE_CLASSES: dict[str, type] = {}
for _name in [c for c, _ in DTYPES.values()]:
    _cls = type(_name, (), {"__module__": "torch.cuda"})
    setattr(torch_cuda_mod, _name, _cls)
    CUDA_STORAGE_CLASSES[_name] = _cls


def _rebuild_tensor(*_args: Any) -> None:  # PyTorch 0.4-era rebuild (4 arguments)
    raise RuntimeError("stand-in")


_rebuild_tensor.__module__ = "torch._utils"
torch_utils_mod._rebuild_tensor = _rebuild_tensor  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------
# Source data: storages as lists of raw little-endian elements.


@dataclass(eq=False)
class Storage:
    """A torch storage: its dtype and its elements, each as raw LE bytes."""

    dtype: str
    elems: list[bytes]
    key: str | None = None  # assigned on first use by a writer
    cls_name: str | None = None  # override of the storage class (hostile cases)
    location: str = "cpu"
    declared_numel: int | None = None  # a lie told by hostile files

    @property
    def numel(self) -> int:
        return len(self.elems) if self.declared_numel is None else self.declared_numel

    @property
    def data(self) -> bytes:
        return b"".join(self.elems)


class StorageView(Storage):
    """A legacy (PyTorch < 0.4) storage view: `size` elements of `root` from `offset`."""

    def __init__(self, root: Storage, offset: int, size: int, key: str):
        super().__init__(root.dtype, root.elems[offset:offset + size], key=key)
        self.root, self.view_offset = root, offset


@dataclass(eq=False)
class Tensor:
    """A tensor as torch pickles it: a storage view."""

    storage: Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    requires_grad: bool = False
    parameter: bool = False  # wrap in torch._utils._rebuild_parameter
    v1: bool = False  # torch._utils._rebuild_tensor(storage, offset, size, stride)

    def __reduce_ex__(self, protocol: int) -> Any:
        if self.v1:
            return (_rebuild_tensor, (self.storage, self.offset, tuple(self.shape), tuple(self.stride)))
        rebuilt = (
            _rebuild_tensor_v2,
            (
                self.storage,
                self.offset,
                tuple(self.shape),
                tuple(self.stride),
                self.requires_grad,
                collections.OrderedDict(),
            ),
        )
        if self.parameter:
            inner = Tensor(self.storage, self.offset, self.shape, self.stride)
            return (_rebuild_parameter, (inner, self.requires_grad, collections.OrderedDict()))
        return rebuilt

    def expected(self) -> dict[str, Any]:
        """Materialise row-major contiguous bytes from the source elements."""
        out = bytearray()
        n = math.prod(self.shape)
        for flat in range(n):
            rem = flat
            idx = self.offset
            for dim in reversed(range(len(self.shape))):
                i = rem % self.shape[dim]
                rem //= self.shape[dim]
                idx += i * self.stride[dim]
            out += self.storage.elems[idx]
        return {"dtype": self.storage.dtype, "shape": list(self.shape), "hex": out.hex()}


def contiguous_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    strides = []
    acc = 1
    for s in reversed(shape):
        strides.append(acc)
        acc *= max(s, 1)
    return tuple(reversed(strides))


def dense(storage: Storage, shape: tuple[int, ...], offset: int = 0, **kw: Any) -> Tensor:
    return Tensor(storage, offset, tuple(shape), contiguous_strides(tuple(shape)), **kw)


def elems_for(dtype: str, n: int, seed: int) -> list[bytes]:
    """Deterministic elements, with each dtype's awkward values up front."""
    rng = random.Random(seed)
    specials: list[bytes]
    if dtype == "F32":
        specials = [
            struct.pack("<f", v) for v in (0.0, -0.0, 1.0, -2.5, math.inf, -math.inf)
        ] + [struct.pack("<I", b) for b in (0x7FC00001, 0x00000001, 0x7F7FFFFF)]
        gen = lambda: struct.pack("<f", rng.uniform(-4, 4))  # noqa: E731
    elif dtype == "F64":
        specials = [
            struct.pack("<d", v) for v in (0.0, -0.0, 1.0, 1e300, -math.inf, 5e-324)
        ] + [struct.pack("<Q", 0x7FF8000000000001)]
        gen = lambda: struct.pack("<d", rng.uniform(-4, 4))  # noqa: E731
    elif dtype == "F16":
        specials = [struct.pack("<e", v) for v in (0.0, -0.0, 65504.0, -math.inf, 6e-8)] + [
            struct.pack("<H", 0x7E01)
        ]
        gen = lambda: struct.pack("<e", rng.uniform(-4, 4))  # noqa: E731
    elif dtype == "BF16":
        specials = [struct.pack("<H", b) for b in (0x0000, 0x8000, 0x3F80, 0x7F80, 0x7FC1, 0x0001)]
        gen = lambda: struct.pack("<f", rng.uniform(-4, 4))[2:]  # noqa: E731
    elif dtype == "I64":
        specials = [
            struct.pack("<q", v) for v in (0, -1, 2**63 - 1, -(2**63), 2**53 + 1, -(2**53) - 3)
        ]
        gen = lambda: struct.pack("<q", rng.randrange(-(2**62), 2**62))  # noqa: E731
    elif dtype == "I32":
        specials = [struct.pack("<i", v) for v in (0, -1, 2**31 - 1, -(2**31))]
        gen = lambda: struct.pack("<i", rng.randrange(-(2**31), 2**31))  # noqa: E731
    elif dtype == "I16":
        specials = [struct.pack("<h", v) for v in (0, -1, 32767, -32768)]
        gen = lambda: struct.pack("<h", rng.randrange(-32768, 32768))  # noqa: E731
    elif dtype == "I8":
        specials = [struct.pack("<b", v) for v in (0, -1, 127, -128)]
        gen = lambda: struct.pack("<b", rng.randrange(-128, 128))  # noqa: E731
    elif dtype == "U8":
        specials = [bytes([v]) for v in (0, 255, 128)]
        gen = lambda: bytes([rng.randrange(256)])  # noqa: E731
    elif dtype == "BOOL":
        specials = [b"\x00", b"\x01"]
        gen = lambda: bytes([rng.randrange(2)])  # noqa: E731
    else:
        raise ValueError(dtype)
    out = specials[:n]
    while len(out) < n:
        out.append(gen())
    return out


def storage(dtype: str, n: int, seed: int) -> Storage:
    return Storage(dtype, elems_for(dtype, n, seed))


def f32(values: list[float]) -> Storage:
    return Storage("F32", [struct.pack("<f", v) for v in values])


# ---------------------------------------------------------------------------
# Picklers


class TorchPickler(pickle._Pickler):  # type: ignore[name-defined]
    """Pure-Python pickler with torch's persistent ids for storages.

    ``legacy`` gives 6-tuples (view metadata None); protocol 0 cannot write a
    tuple through PERSID (Python writes ``str(pid)``), so like a protocol-1
    pickler it saves the tuple and writes BINPERSID.
    """

    def __init__(self, f: io.BytesIO, protocol: int, legacy: bool = False, **kw: Any):
        super().__init__(f, protocol, **kw)
        self.legacy = legacy
        self.storages: dict[str, Storage] = {}
        self.next_key = 0

    def persistent_id(self, obj: Any) -> Any:
        if not isinstance(obj, Storage):
            return None
        if isinstance(obj, StorageView):
            root = obj.root
            self.storages[root.key] = root  # type: ignore[index]
            cls = STORAGE_CLASSES[DTYPES[root.dtype][0]]
            return ("storage", cls, root.key, "cpu", root.numel, (obj.key, obj.view_offset, obj.numel))
        if obj.key is None:
            obj.key = str(self.next_key)
            self.next_key += 1
        self.storages[obj.key] = obj
        classes = CUDA_STORAGE_CLASSES if obj.location.startswith("cuda") and self.legacy else STORAGE_CLASSES
        cls = classes[obj.cls_name or DTYPES[obj.dtype][0]]
        pid = ("storage", cls, obj.key, obj.location, obj.numel)
        return pid + (None,) if self.legacy else pid

    def save_pers(self, pid: Any) -> None:
        self.save(pid, save_persistent_id=False)
        self.write(pickle.BINPERSID)


def dumps(obj: Any, protocol: int = 2, legacy: bool = False) -> tuple[bytes, dict[str, Storage]]:
    buf = io.BytesIO()
    p = TorchPickler(buf, protocol, legacy=legacy)
    p.dump(obj)
    return buf.getvalue(), p.storages


def reset_keys(*objs: Any) -> None:
    """Forget storage keys so that a fresh writer numbers them again."""
    seen: set[int] = set()

    def walk(o: Any) -> None:
        if id(o) in seen:
            return
        seen.add(id(o))
        if isinstance(o, Storage):
            o.key = None
        elif isinstance(o, Tensor):
            walk(o.storage)
        elif isinstance(o, dict):
            for v in o.values():
                walk(v)
        elif isinstance(o, (list, tuple)):
            for v in o:
                walk(v)
        elif isinstance(o, argparse.Namespace):
            walk(vars(o))

    for o in objs:
        walk(o)


# ---------------------------------------------------------------------------
# Hand assembly of pickles


class Asm:
    """Write pickle opcodes by hand (for opcodes Python's pickler never emits)."""

    def __init__(self, proto: int | None = 2):
        self.b = bytearray()
        if proto is not None:
            self.b += pickle.PROTO + bytes([proto])

    def raw(self, *parts: bytes) -> "Asm":
        for p in parts:
            self.b += p
        return self

    # scalars -------------------------------------------------------------
    def int_(self, n: int) -> "Asm":
        if 0 <= n < 256:
            return self.raw(pickle.BININT1, bytes([n]))
        if 0 <= n < 65536:
            return self.raw(pickle.BININT2, struct.pack("<H", n))
        if -(2**31) <= n < 2**31:
            return self.raw(pickle.BININT, struct.pack("<i", n))
        return self.long1(n)

    def long1(self, n: int, nbytes: int | None = None) -> "Asm":
        data = encode_long(n, nbytes)
        return self.raw(pickle.LONG1, bytes([len(data)]), data)

    def uni(self, s: str) -> "Asm":
        data = s.encode("utf-8")
        return self.raw(pickle.BINUNICODE, struct.pack("<I", len(data)), data)

    def glob(self, module: str, name: str) -> "Asm":
        return self.raw(pickle.GLOBAL, f"{module}\n{name}\n".encode())

    def mark(self) -> "Asm":
        return self.raw(pickle.MARK)

    def stop(self) -> bytes:
        self.b += pickle.STOP
        return bytes(self.b)

    # torch structures -------------------------------------------------------
    def tuple_of(self, items: tuple[int, ...]) -> "Asm":
        if len(items) == 0:
            return self.raw(pickle.EMPTY_TUPLE)
        self.mark()
        for i in items:
            self.int_(i)
        return self.raw(pickle.TUPLE)

    def pid(self, cls_module: str, cls_name: str, key: str, numel: int, loc: str = "cpu") -> "Asm":
        self.mark().uni("storage").glob(cls_module, cls_name).uni(key).uni(loc).int_(numel)
        return self.raw(pickle.TUPLE, pickle.BINPERSID)

    def ordered_dict(self) -> "Asm":
        return self.glob("collections", "OrderedDict").raw(pickle.EMPTY_TUPLE, pickle.REDUCE)

    def tensor(
        self,
        pid: Callable[["Asm"], Any],
        offset: int,
        shape: tuple[int, ...],
        stride: tuple[int, ...],
        rebuild: tuple[str, str] = ("torch._utils", "_rebuild_tensor_v2"),
    ) -> "Asm":
        self.glob(*rebuild).mark()
        pid(self)
        self.int_(offset).tuple_of(shape).tuple_of(stride).raw(pickle.NEWFALSE)
        self.ordered_dict()
        return self.raw(pickle.TUPLE, pickle.REDUCE)


def encode_long(n: int, nbytes: int | None = None) -> bytes:
    """Two's complement little-endian, as pickle's LONG1/LONG4 want it."""
    if nbytes is None:
        if n == 0:
            return b""
        nbytes = (n.bit_length() + 8) // 8  # always room for the sign bit
    return n.to_bytes(nbytes, "little", signed=True)


# ---------------------------------------------------------------------------
# Container writers


def write_zip(
    entries: list[tuple[str, bytes]],
    zip64: bool = False,
    align: int = 64,
    descriptor: bool = True,
) -> bytes:
    """A stored (uncompressed) zip laid out like PyTorch's writer (miniz): data
    64-byte aligned through an "FB" padding extra field, general-purpose flags
    0x0808 (UTF-8 names, sizes and CRC-32 in a data descriptor after the data,
    zeros in the local header), zero versions and dates. `descriptor=False`
    writes classic local headers with CRC-32 and sizes instead; `zip64` gives
    every entry zip64 extra fields and ends with zip64 end records."""
    out = bytearray()
    central = bytearray()
    flags = 0x0808 if descriptor else 0x0800
    version = 45 if zip64 else 0
    for name, data in entries:
        nb = name.encode("utf-8")
        offset = len(out)
        crc = zlib.crc32(data) & 0xFFFFFFFF
        extra = struct.pack("<HHQQ", 0x0001, 16, len(data), len(data)) if zip64 else b""
        base = offset + 30 + len(nb) + len(extra)
        if align:
            pad = (-(base + 4)) % align
            extra += struct.pack("<HH", 0x4246, pad) + b"Z" * pad  # torch's "FB" padding
        if zip64:
            local_crc, local_size = (0, 0xFFFFFFFF) if descriptor else (crc, 0xFFFFFFFF)
        else:
            local_crc, local_size = (0, 0) if descriptor else (crc, len(data))
        out += struct.pack(
            "<IHHHHHIIIHH", 0x04034B50, version, flags, 0, 0, 0, local_crc, local_size,
            local_size, len(nb), len(extra),
        )
        out += nb + extra + data
        if descriptor:
            size_fmt = "Q" if zip64 else "I"
            out += struct.pack(f"<II{size_fmt}{size_fmt}", 0x08074B50, crc, len(data), len(data))
        if zip64:
            cextra = struct.pack("<HHQQQ", 0x0001, 24, len(data), len(data), offset)
            size32 = off32 = 0xFFFFFFFF
        else:
            cextra = b""
            size32, off32 = len(data), offset
        central += struct.pack(
            "<IHHHHHHIIIHHHHHII", 0x02014B50, version, version, flags, 0, 0, 0, crc, size32,
            size32, len(nb), len(cextra), 0, 0, 0, 0, off32,
        )
        central += nb + cextra
    cd_offset = len(out)
    out += central
    n = len(entries)
    if zip64:
        eocd64_offset = len(out)
        out += struct.pack(
            "<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, n, n, len(central), cd_offset
        )
        out += struct.pack("<IIQI", 0x07064B50, 0, eocd64_offset, 1)
        out += struct.pack(
            "<IHHHHIIH", 0x06054B50, 0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0
        )
    else:
        out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, n, n, len(central), cd_offset, 0)
    return bytes(out)


def torch_zip(
    pkl: bytes,
    storages: dict[str, Storage],
    archive: str = "archive",
    zip64: bool = False,
    skip: tuple[str, ...] = (),
    extra_entries: tuple[tuple[str, bytes], ...] = (),
    byteorder: bytes = b"little",
    descriptor: bool = True,
) -> bytes:
    entries = [
        (f"{archive}/data.pkl", pkl),
        (f"{archive}/.format_version", b"1"),
        (f"{archive}/.storage_alignment", b"64"),
        (f"{archive}/byteorder", byteorder),
    ]
    for key in sorted(storages, key=lambda k: (len(k), k)):
        if key in skip:
            continue
        st = storages[key]
        data = b"".join(e[::-1] for e in st.elems) if byteorder == b"big" else st.data
        entries.append((f"{archive}/data/{key}", data))
    entries += list(extra_entries)
    entries.append((f"{archive}/version", b"3\n"))
    entries.append((f"{archive}/.data/serialization_id", b"0" * 40))
    return write_zip(entries, zip64=zip64, descriptor=descriptor)


LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_SYS_INFO = {
    "protocol_version": 1001,
    "little_endian": True,
    "type_sizes": {"short": 2, "int": 4, "long": 4},
}


def legacy_file(obj: Any, order: list[str] | None = None, counts: dict[str, int] | None = None) -> bytes:
    """PyTorch < 1.6 serialisation: four pickles, then the storages."""
    out = io.BytesIO()
    for head in (LEGACY_MAGIC, 1001, LEGACY_SYS_INFO):
        pickle.dump(head, out, protocol=2)
    pkl, storages = dumps(obj, 2, legacy=True)
    out.write(pkl)
    keys = order if order is not None else sorted(storages)
    pickle.dump(keys, out, protocol=2)
    for key in keys:
        st = storages[key]
        count = (counts or {}).get(key, st.numel)
        out.write(struct.pack("<q", count))
        out.write(st.data)
    return out.getvalue()


# ---------------------------------------------------------------------------
# Cases

CASES: list[dict[str, Any]] = []
FILES: dict[str, bytes] = {}


def expect_tensors(tensors: dict[str, Tensor]) -> dict[str, Any]:
    return {name: t.expected() for name, t in tensors.items()}


def add(
    name: str,
    data: bytes,
    kind: str,
    what: str,
    *,
    ext: str = "pt",
    tensors: dict[str, Tensor] | None = None,
    expect: str = "ok",
    options: dict[str, Any] | None = None,
    message: str | None = None,
    fuzz: bool = False,
) -> None:
    """Register one fixture.

    expect: "ok" (must load to exactly `tensors`), "error" (must throw the
    reader's error class; `message` is a regex its message must match), or
    "ok_or_error" (either loads to exactly `tensors` or throws cleanly).
    """
    fname = f"{kind}/{name}.{ext}"
    assert fname not in FILES, fname
    FILES[fname] = data
    case: dict[str, Any] = {"name": name, "file": fname, "kind": kind, "what": what, "expect": expect}
    if options:
        case["options"] = options
    if message:
        case["message"] = message
    if tensors is not None:
        case["tensors"] = expect_tensors(tensors)
    if fuzz:
        case["fuzz"] = True
    CASES.append(case)


def zip_case(
    name: str,
    obj: Any,
    kind: str,
    what: str,
    tensors: dict[str, Tensor] | None,
    protocol: int = 2,
    **kw: Any,
) -> None:
    zip_kw = {k: kw.pop(k) for k in ("archive", "zip64", "skip", "extra_entries", "byteorder", "descriptor") if k in kw}
    reset_keys(obj)
    pkl, storages = dumps(obj, protocol)
    add(name, torch_zip(pkl, storages, **zip_kw), kind, what, tensors=tensors, **kw)


def sd(**tensors: Tensor) -> "collections.OrderedDict[str, Tensor]":
    return collections.OrderedDict(tensors)


# --- edge cases ---------------------------------------------------------------


def edge_cases() -> None:
    for i, dt in enumerate(DTYPES):
        st = storage(dt, 12, 100 + i)
        t = {"w": dense(st, (3, 4)), "v": Tensor(st, 5, (3,), (2,))}
        zip_case(f"dtype_{dt.lower()}", sd(**t), "edge", f"one {dt} tensor and a strided view", t)

    st = f32([float(i) for i in range(24)])
    t = {
        "offset": Tensor(st, 7, (2, 3), (3, 1)),
        "strided": Tensor(st, 1, (3, 2), (8, 3)),
        "transposed": Tensor(st, 0, (4, 6), (1, 4)),
        "expanded": Tensor(st, 5, (3, 4), (0, 1)),
        "scalar_expanded": Tensor(st, 23, (2, 2), (0, 0)),
        "last_element": Tensor(st, 23, (1,), (1,)),
    }
    zip_case("views", sd(**t), "edge", "storage offset, strides, transposed and stride-0 views", t)

    st = storage("F32", 60, 21)
    t = {
        "chw": Tensor(st, 0, (3, 4, 5), (20, 5, 1)),
        "nhwc_permuted": Tensor(st, 0, (2, 2, 5, 3), (30, 5, 1, 10)),
        "broadcast_3d": Tensor(st, 7, (2, 3, 4), (0, 1, 0)),
        "size_one_odd_strides": Tensor(st, 59, (1, 1, 1), (1000, 7, 0)),
    }
    zip_case("views_nd", sd(**t), "edge", "3-d and 4-d views: permuted, broadcast, size-1 dims", t)

    # the same state_dict object twice: the second is a memo reference (BINGET) to a dict
    # memoised while still empty and filled afterwards
    st = f32([0.5, 1.5, 2.5, 3.5])
    t = {"w": dense(st, (2, 2))}
    shared = collections.OrderedDict(t)
    zip_case("memo_shared_dict", {"model": shared, "model_ema": shared}, "edge",
             "model_ema is a memo reference to the model dict (filled after it was memoised)", t,
             options={"key": "model_ema"})

    tied = f32([0.5 * i - 3 for i in range(12)])
    t = {
        "transformer.wte.weight": dense(tied, (4, 3)),
        "lm_head.weight": dense(tied, (4, 3)),
        "half_view": Tensor(tied, 6, (2, 3), (3, 1)),
    }
    zip_case("shared_storage", sd(**t), "edge", "tied weights: three tensors on one storage", t)

    t = {
        "scalar_f32": dense(f32([3.5]), ()),
        "scalar_i64": dense(Storage("I64", [struct.pack("<q", -(2**62) - 5)]), ()),
        "scalar_in_bigger_storage": Tensor(f32([1, 2, 3, 4]), 2, (), ()),
        "scalar_bool": dense(Storage("BOOL", [b"\x01"]), ()),
    }
    zip_case("zero_dim", sd(**t), "edge", "0-dim tensors (shape [])", t)

    empty_f32 = Storage("F32", [])
    t = {
        "empty_1d": dense(empty_f32, (0,)),
        "empty_2d": dense(Storage("I64", []), (3, 0)),
        "empty_view_of_data": Tensor(f32([1, 2, 3]), 1, (0, 5), (5, 1)),
        "nonempty": dense(f32([9.0, 8.0]), (2,)),
    }
    zip_case("empty", sd(**t), "edge", "empty tensors and empty storages", t)

    st = f32([1.0, -1.0, 2.0, -2.0, 0.25, 0.125])
    t = {"weight": Tensor(st, 0, (2, 3), (3, 1), requires_grad=True, parameter=True),
         "bias": Tensor(st, 4, (2,), (1,), parameter=True)}
    zip_case("parameter", sd(**t), "edge", "torch._utils._rebuild_parameter around tensors", t)

    # bare OrderedDict state_dict with torch's _metadata attribute (BUILD)
    st = f32([float(i) / 8 for i in range(10)])
    t = {"layer.weight": dense(st, (2, 4)), "layer.bias": Tensor(st, 8, (2,), (1,))}
    bare = collections.OrderedDict(t)
    bare._metadata = collections.OrderedDict(  # type: ignore[attr-defined]
        [("", {"version": 1}), ("layer", {"version": 1})]
    )
    zip_case("state_dict_metadata", bare, "edge", "bare state_dict with _metadata (BUILD)", t)

    # prefixes
    for prefix, label in (("_orig_mod.", "orig_mod"), ("module.", "module")):
        st = f32([1.5, 2.5, 3.5, 4.5])
        raw = {f"{prefix}a.weight": dense(st, (2, 2)), f"{prefix}a.bias": Tensor(st, 1, (2,), (2,))}
        t = {"a.weight": raw[f"{prefix}a.weight"], "a.bias": raw[f"{prefix}a.bias"]}
        zip_case(f"prefix_{label}", {"model": collections.OrderedDict(raw)}, "edge",
                 f"keys prefixed '{prefix}' are stripped", t)

    # full training checkpoint, vision style, with args Namespace, model_ema, optimizer
    model_ema_case(protocol=2, name="training_checkpoint")
    model_ema_case(protocol=0, name="training_checkpoint_p0")

    # language style: _orig_mod. prefix, tied storage, 0-dim best_val_loss, model_args dict
    wte = f32([0.1 * i for i in range(15)])
    raw = collections.OrderedDict(
        [
            ("_orig_mod.transformer.wte.weight", dense(wte, (5, 3))),
            ("_orig_mod.transformer.h.0.attn.denom_bias", dense(storage("F32", 8, 7), (2, 4, 1))),
            ("_orig_mod.lm_head.weight", dense(wte, (5, 3))),
        ]
    )
    ckpt = {
        "model": raw,
        "optimizer": {"state": {0: {"step": dense(f32([3.0]), ()), "exp_avg": dense(storage("F32", 15, 9), (5, 3))}},
                      "param_groups": [{"lr": 6e-4, "betas": (0.9, 0.95), "params": [0, 1]}]},
        "model_args": {"n_layer": 1, "n_head": 2, "n_embd": 3, "block_size": 4, "bias": True,
                       "vocab_size": 5, "dropout": 0.0},
        "iter_num": 2000,
        "best_val_loss": dense(f32([1.4375]), ()),
        "config": {"dataset": "shakespeare_char", "compile": True, "dtype": "float16"},
    }
    t = {k[len("_orig_mod."):]: v for k, v in raw.items()}
    zip_case("lang_checkpoint", ckpt, "edge", "nanoGPT-style checkpoint: _orig_mod., tied, 0-dim loss", t)

    # location strings other than cpu (GPU-saved checkpoints load on CPU)
    st = storage("F16", 6, 11)
    st.location = "cuda:0"
    t = {"w": dense(st, (2, 3))}
    zip_case("location_cuda", sd(**t), "edge", "storage location 'cuda:0'", t)

    # archive directory names
    st = f32([1, 2, 3])
    t = {"x": dense(st, (3,))}
    zip_case("archive_name", sd(**t), "edge", "archive directory not named 'archive'", t,
             archive="my model-v1.2")

    # zip64
    st = storage("BF16", 40, 12)
    st2 = storage("I64", 5, 13)
    t = {"w": dense(st, (5, 8)), "n": dense(st2, (5,))}
    zip_case("zip64", sd(**t), "edge", "every entry with zip64 extra fields and a zip64 end record",
             t, zip64=True)

    st = storage("F64", 6, 15)
    t = {"w": dense(st, (2, 3)), "w_t": Tensor(st, 0, (3, 2), (1, 3))}
    zip_case("zip_no_descriptor", sd(**t), "edge",
             "classic zip: CRC-32 and sizes in the local headers, no data descriptors", t,
             descriptor=False)
    st = storage("I32", 6, 16)
    t = {"w": dense(st, (6,))}
    zip_case("zip64_no_descriptor", sd(**t), "edge", "zip64 without data descriptors", t,
             zip64=True, descriptor=False)

    # big-endian files (saved on a big-endian machine): bytes must come out little-endian
    t = {"f": dense(storage("F32", 6, 17), (2, 3)), "i": dense(storage("I64", 3, 18), (3,)),
         "h": dense(storage("F16", 4, 19), (4,)), "b": dense(storage("BOOL", 2, 20), (2,))}
    zip_case("byteorder_big", sd(**t), "edge",
             "byteorder 'big': storages stored big-endian; load swapped, or refuse cleanly", t,
             byteorder=b"big", expect="ok_or_error")

    # 0 elements with huge other dimensions
    t = {"zero_by_huge": Tensor(Storage("F32", []), 0, (0, 2**40), (2**40, 1)),
         "huge_by_zero": Tensor(Storage("F16", []), 0, (2**40, 0), (1, 1))}
    zip_case("empty_huge_dims", sd(**t), "edge", "empty tensors whose other dimensions are 2^40", t)

    # many storages keys > 9 (ordering "10" < "2" lexicographically)
    tensors = {f"p{i}": dense(f32([i, -i]), (2,)) for i in range(12)}
    zip_case("many_storages", sd(**tensors), "edge", "12 storages, keys 0..11", tensors)

    # big-ish tensor: forces LONG_BINPUT etc. no; a 1 MiB-free check of a longer storage
    st = storage("F32", 3000, 14)
    t = {"big": dense(st, (30, 100)), "tail": Tensor(st, 2999, (1,), (1,))}
    zip_case("long_storage", sd(**t), "edge", "a 3000-element storage", t)

    # protocols 0..5 via Python's own pickler
    for proto in range(6):
        st = storage("F32", 8, 20 + proto)
        st2 = storage("I64", 3, 30 + proto)
        t = {
            "w": dense(st, (2, 4)),
            "w_t": Tensor(st, 0, (4, 2), (1, 4)),
            "tied": dense(st, (2, 4)),
            "n": dense(st2, (3,)),
        }
        extra = {
            "floats": [0.5, -1e300, math.inf, -math.inf, math.nan, 5e-324],
            "ints": [0, -1, 255, 256, 65535, 65536, -(2**31), 2**31, 2**64, -(2**70)],
            "flags": (True, False, None),
            "text": "grüße ✓",
            "nested": {"a": [1, (2, 3)], (4, 5): "tuple key"},
        }
        # bytes: _codecs.encode / __builtin__.bytes below protocol 3, BINBYTES from 3;
        # sets: __builtin__.set REDUCE below protocol 4, EMPTY_SET/ADDITEMS from 4
        extra["blob"] = b"\x00\xffbytes"
        extra["empty_blob"] = b""
        extra["set"] = {1, 2, 3}
        extra["frozen"] = frozenset({"x"})
        if proto >= 5:
            extra["bytearray"] = bytearray(b"\x01\x02")
        obj = {"model": collections.OrderedDict(t), "extra": extra}
        zip_case(f"protocol_{proto}", obj, "opcodes",
                 f"Python's pickler at protocol {proto} (protocol 0 with BINPERSID)", t,
                 protocol=proto, options={"key": "model"})

    # legacy format
    st_a = storage("F32", 6, 40)
    st_b = storage("I64", 2, 41)
    st_c = storage("F16", 4, 42)
    t = {"a": dense(st_a, (2, 3)), "a_t": Tensor(st_a, 0, (3, 2), (1, 3)), "b": dense(st_b, (2,)),
         "c": Tensor(st_c, 1, (3,), (1,))}
    obj = collections.OrderedDict(t)
    reset_keys(obj)
    # keys as torch's legacy writer makes them (str(id)); chosen so that sorted order differs
    # from first-use order
    st_a.key, st_b.key, st_c.key = "9", "10", "140234"
    add("legacy", legacy_file(obj), "edge", "legacy (PyTorch < 1.6) format", tensors=t, fuzz=True)
    st_a.key = st_b.key = st_c.key = None

    st_h = storage("F16", 6, 45)
    st_h.key, st_h.location = "94", "cuda:0"
    st_l = storage("I64", 2, 46)
    st_l.key, st_l.location = "95", "cuda:1"
    t = {"h": Tensor(st_h, 0, (2, 3), (3, 1), v1=True), "h_t": Tensor(st_h, 0, (3, 2), (1, 3), v1=True),
         "n": Tensor(st_l, 1, (1,), (1,), v1=True)}
    add("legacy_cuda_v1", legacy_file(collections.OrderedDict(t)), "edge",
        "legacy GPU checkpoint: torch.cuda.HalfStorage/LongStorage, 'cuda:N', _rebuild_tensor (v1)",
        tensors=t)
    st_h.key = st_l.key = None

    root = storage("F32", 20, 44)
    root.key = "77"
    view_a = StorageView(root, 5, 10, "78")
    view_b = StorageView(root, 12, 8, "79")
    t = {"a": Tensor(view_a, 2, (2, 3), (4, 1)), "b": dense(view_b, (8,)),
         "a_again": Tensor(view_a, 0, (10,), (1,)), "root": dense(root, (4, 5))}
    obj = collections.OrderedDict(t)
    add("legacy_storage_view", legacy_file(obj), "edge",
        "legacy storage views: persistent ids with view_metadata (view_key, offset, size)", tensors=t)
    root.key = None

    st = storage("F32", 4, 43)
    t = {"w": dense(st, (2, 2))}
    st.key = "0"
    ckpt = {"model": collections.OrderedDict(t), "epoch": 3, "args": argparse.Namespace(lr=0.1, model="x")}
    add("legacy_training", legacy_file(ckpt), "edge", "legacy training checkpoint with Namespace",
        tensors=t)
    st.key = None


def model_ema_case(protocol: int, name: str) -> None:
    w = storage("F32", 12, 50)
    bn = Storage("I64", [struct.pack("<q", 7)])
    ema = storage("F32", 12, 51)
    model = collections.OrderedDict(
        [("blocks.0.weight", dense(w, (3, 4))),
         ("patch_embed.proj.0.1.num_batches_tracked", dense(bn, ())),
         ("gamma1", Tensor(w, 8, (4,), (1,)))]
    )
    model_ema = collections.OrderedDict(
        [("blocks.0.weight", dense(ema, (3, 4))),
         ("patch_embed.proj.0.1.num_batches_tracked", dense(bn, ())),
         ("gamma1", Tensor(ema, 8, (4,), (1,)))]
    )
    args = argparse.Namespace(model="tost_cab_tiny_12_p16", lr=0.001, epochs=3, input_size=32,
                              drop_path=0.0, eval=False, output_dir="/tmp/x")
    ckpt = {
        "model": model,
        "optimizer": {"state": {0: {"step": dense(f32([3.0]), ()),
                                    "exp_avg": dense(storage("F32", 12, 52), (3, 4))}},
                      "param_groups": [{"lr": 0.001, "params": [0]}]},
        "lr_scheduler": {"t_initial": 3, "base_values": [0.001]},
        "model_ema": model_ema,
        "scaler": {"scale": 65536.0, "growth_factor": 2.0, "_growth_tracker": 0},
        "epoch": 2,
        "args": args,
    }
    what = f"vision training checkpoint, protocol {protocol} (Namespace via " + (
        "NEWOBJ" if protocol >= 2 else "copyreg._reconstructor") + ")"
    zip_case(name, ckpt, "edge", what, dict(model), protocol=protocol,
             options={"key": "model"})
    zip_case(name + "_ema", ckpt, "edge", what + ", key model_ema", dict(model_ema),
             protocol=protocol, options={"key": "model_ema"})


# --- opcode families ------------------------------------------------------------


class VariantPickler(TorchPickler):
    """TorchPickler that spells ints, strings and memo slots with chosen opcodes."""

    dispatch = TorchPickler.dispatch.copy()

    def __init__(
        self,
        f: io.BytesIO,
        protocol: int,
        ints: str | None = None,
        strs: str | None = None,
        memo: str | None = None,
        memo_base: int = 0,
    ):
        super().__init__(f, protocol)
        self.ints, self.strs, self.memo_kind, self.memo_base = ints, strs, memo, memo_base

    def save_long_variant(self, obj: int) -> None:
        kind = self.ints
        if kind == "INT":  # protocol 0 decimal text
            self.write(pickle.INT + str(obj).encode() + b"\n")
        elif kind == "LONG":  # protocol 0 long text with and without the L suffix
            suffix = b"L\n" if obj % 2 == 0 else b"\n"
            self.write(pickle.LONG + str(obj).encode() + suffix)
        elif kind == "LONG1":  # always LONG1, with a redundant sign byte
            data = encode_long(obj, len(encode_long(obj)) + 1)
            self.write(pickle.LONG1 + bytes([len(data)]) + data)
        elif kind == "LONG4":
            data = encode_long(obj)
            self.write(pickle.LONG4 + struct.pack("<i", len(data)) + data)
        elif kind == "BININT" and -(2**31) <= obj < 2**31:  # 4-byte form even for small values
            self.write(pickle.BININT + struct.pack("<i", obj))
        else:
            pickle._Pickler.save_long(self, obj)  # type: ignore[attr-defined]

    def save_bool_variant(self, obj: bool) -> None:
        if self.ints in ("INT", "LONG"):
            self.write(pickle.TRUE if obj else pickle.FALSE)  # I01 / I00
        else:
            pickle._Pickler.save_bool(self, obj)  # type: ignore[attr-defined]

    def save_str_variant(self, obj: str) -> None:
        kind = self.strs
        data = obj.encode("utf-8")
        if kind == "STRING":  # protocol 0 quoted repr (Python 2 str)
            self.write(pickle.STRING + repr(data)[1:].encode("ascii") + b"\n")
        elif kind == "BINSTRING":
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        elif kind == "SHORT_BINSTRING":
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        elif kind == "UNICODE":
            # as Python's protocol-0 pickler: Latin-1 bytes stay single bytes, others \uXXXX
            esc = obj.replace("\\", "\\u005c").replace("\n", "\\u000a").encode("raw-unicode-escape")
            self.write(pickle.UNICODE + esc + b"\n")
        elif kind == "BINUNICODE8":
            self.write(pickle.BINUNICODE8 + struct.pack("<Q", len(data)) + data)
        elif kind == "SHORT_BINUNICODE":
            self.write(pickle.SHORT_BINUNICODE + bytes([len(data)]) + data)
        else:
            pickle._Pickler.save_str(self, obj)  # type: ignore[attr-defined]
            return
        self.memoize(obj)

    dispatch[int] = save_long_variant
    dispatch[bool] = save_bool_variant
    dispatch[str] = save_str_variant

    def put(self, idx: int) -> bytes:
        idx += self.memo_base
        if self.memo_kind == "PUT":
            return pickle.PUT + str(idx).encode() + b"\n"
        if self.memo_kind == "LONG_BINPUT":
            return pickle.LONG_BINPUT + struct.pack("<I", idx)
        if self.memo_kind == "MEMOIZE":
            return pickle.MEMOIZE
        return super().put(idx)

    def get(self, i: int) -> bytes:
        if self.memo_kind == "MEMOIZE":
            return super().get(i)
        i += self.memo_base
        if self.memo_kind == "PUT":
            return pickle.GET + str(i).encode() + b"\n"
        if self.memo_kind == "LONG_BINPUT":
            return pickle.LONG_BINGET + struct.pack("<I", i)
        return super().get(i)


def variant_case(name: str, what: str, protocol: int, **variant: Any) -> None:
    st = storage("F32", 300, 60 + len(CASES))
    st2 = storage("I64", 4, 61 + len(CASES))
    t = {
        "w": dense(st, (10, 30)),
        "w_t": Tensor(st, 0, (30, 10), (1, 30)),
        "view": Tensor(st, 257, (2, 3), (20, 7), requires_grad=True),
        "tied": dense(st, (10, 30)),
        "n": dense(st2, (4,)),
        "scalar": Tensor(st2, 3, (), ()),
    }
    if variant.get("strs"):
        # quotes, a literal backslash-u, a newline, Latin-1, Greek and a non-BMP character
        t["it's \"q\" \\u0041 \\x41\nb grüße.ψ🙂"] = dense(st2, (2, 2))
    obj = {"model": collections.OrderedDict(t), "epoch": 70000, "neg": -(2**40), "step": 2**70}
    reset_keys(obj)
    buf = io.BytesIO()
    p = VariantPickler(buf, protocol, **variant)
    p.dump(obj)
    add(name, torch_zip(buf.getvalue(), p.storages), "opcodes", what, tensors=t,
        options={"key": "model"})


def small_sd_zip(
    name: str,
    what: str,
    body: Callable[[Asm, Callable[[Asm], Any]], None],
    proto: int = 2,
    expect: str = "ok",
    message: str | None = None,
    kind: str = "opcodes",
    tensors_fn: Callable[[Storage], dict[str, Tensor]] | None = None,
    options: dict[str, Any] | None = None,
) -> None:
    """A hand-assembled state dict over one F32 storage "0" of 6 elements."""
    st = f32([1.0, 2.0, -3.0, 4.5, 0.0, 7.25])
    st.key = "0"

    def pid(a: Asm) -> None:
        a.pid("torch", "FloatStorage", "0", 6)

    a = Asm(proto)
    body(a, pid)
    tensors = tensors_fn(st) if tensors_fn and expect != "error" else None
    add(name, torch_zip(a.stop(), {"0": st}), kind, what, tensors=tensors, expect=expect,
        message=message, options=options)
    st.key = None


def opcode_cases() -> None:
    variant_case("ints_INT", "ints as INT decimal text, bools as I01/I00", 0, ints="INT")
    variant_case("ints_LONG", "ints as LONG text (with and without L)", 0, ints="LONG")
    variant_case("ints_LONG1", "ints as LONG1 with a redundant sign byte", 2, ints="LONG1")
    variant_case("ints_LONG4", "ints as LONG4", 2, ints="LONG4")
    variant_case("ints_BININT", "ints as 4-byte BININT", 1, ints="BININT")
    variant_case("str_STRING", "names as STRING (quoted text)", 0, strs="STRING")
    variant_case("str_BINSTRING", "names as BINSTRING", 1, strs="BINSTRING")
    variant_case("str_SHORT_BINSTRING", "names as SHORT_BINSTRING", 2, strs="SHORT_BINSTRING")
    variant_case("str_UNICODE", "names as UNICODE raw-unicode-escape text", 0, strs="UNICODE")
    variant_case("str_BINUNICODE8", "names as BINUNICODE8", 4, strs="BINUNICODE8")
    variant_case("str_SHORT_BINUNICODE", "names as SHORT_BINUNICODE", 4, strs="SHORT_BINUNICODE")
    variant_case("memo_PUT_GET", "memo through PUT/GET text", 0, memo="PUT", memo_base=5)
    # indices from 260 (0x104: a byte-order mistake reads 0x04010000); pickles written by
    # CPython number the memo densely from 0, so larger gaps are left to the hostile cases
    variant_case("memo_LONG_BINPUT", "memo through LONG_BINPUT/LONG_BINGET from index 260",
                 2, memo="LONG_BINPUT", memo_base=260)
    variant_case("memo_MEMOIZE", "memo through MEMOIZE (protocol 4)", 4, memo="MEMOIZE")

    def expect_two(st: Storage) -> dict[str, Tensor]:
        return {"a": Tensor(st, 0, (2, 3), (3, 1)), "b": Tensor(st, 2, (2,), (2,))}

    def two_tensors(a: Asm, pid: Callable[[Asm], Any]) -> None:
        a.uni("a").tensor(pid, 0, (2, 3), (3, 1))
        a.uni("b").tensor(pid, 2, (2,), (2,))

    # stack manipulation: DUP, POP, POP_MARK
    def stack_ops(a: Asm, pid: Callable[[Asm], Any]) -> None:
        a.raw(pickle.EMPTY_DICT, pickle.MARK)
        a.uni("junk").raw(pickle.POP)  # pushed and dropped
        a.mark().int_(1).uni("x").raw(pickle.POP_MARK)  # a marked run dropped
        a.uni("a").tensor(pid, 0, (2, 3), (3, 1))
        # b: shape (2,) built with DUP: int 2 DUP -> (2, 2)[:1]... use TUPLE1 of one DUPed value
        a.uni("b").glob("torch._utils", "_rebuild_tensor_v2").mark()
        pid(a)
        a.int_(2).raw(pickle.DUP, pickle.TUPLE2, pickle.POP)  # (2,2) built then popped
        a.int_(2).tuple_of((2,)).tuple_of((2,)).raw(pickle.NEWFALSE).ordered_dict()
        a.raw(pickle.TUPLE, pickle.REDUCE, pickle.SETITEMS)

    small_sd_zip("stack_DUP_POP_POP_MARK", "DUP, POP and POP_MARK", stack_ops,
                 tensors_fn=expect_two)

    # protocol 0 containers: DICT, SETITEM, LIST, APPEND, TUPLE, (no EMPTY_*)
    def p0_containers(a: Asm, pid: Callable[[Asm], Any]) -> None:
        a.raw(pickle.MARK, pickle.DICT)
        a.uni("model").raw(pickle.MARK, pickle.DICT)
        a.uni("a").tensor(pid, 0, (2, 3), (3, 1)).raw(pickle.SETITEM)
        a.uni("b").tensor(pid, 2, (2,), (2,)).raw(pickle.SETITEM, pickle.SETITEM)
        a.uni("meta").raw(pickle.MARK, pickle.LIST).int_(1).raw(pickle.APPEND)
        a.raw(pickle.MARK, pickle.TUPLE, pickle.APPEND, pickle.SETITEM)

    small_sd_zip("containers_DICT_LIST_APPEND", "MARK DICT, SETITEM, MARK LIST, APPEND",
                 p0_containers, proto=None, tensors_fn=expect_two,  # type: ignore[arg-type]
                 options={"key": "model"})

    # sets, frozensets and big binary strings beside the tensors (protocol 4/5 opcodes)
    def p45_values(a: Asm, pid: Callable[[Asm], Any]) -> None:
        a.raw(pickle.EMPTY_DICT, pickle.MARK)
        a.uni("model").raw(pickle.EMPTY_DICT, pickle.MARK)
        two_tensors(a, pid)
        a.raw(pickle.SETITEMS)
        a.uni("set").raw(pickle.EMPTY_SET, pickle.MARK).int_(1).int_(2).raw(pickle.ADDITEMS)
        a.uni("frozen").raw(pickle.MARK).uni("x").raw(pickle.FROZENSET)
        a.uni("b8").raw(pickle.BINBYTES8, struct.pack("<Q", 3), b"abc")
        a.uni("ba8").raw(pickle.BYTEARRAY8, struct.pack("<Q", 2), b"\x00\x01")
        a.uni("u8").raw(pickle.BINUNICODE8, struct.pack("<Q", 2), "é".encode())
        a.uni("bb").raw(pickle.BINBYTES, struct.pack("<I", 1), b"z")
        a.uni("sbb").raw(pickle.SHORT_BINBYTES, b"\x01q")
        a.uni("f").raw(pickle.BINFLOAT, struct.pack(">d", 0.25))
        a.uni("ftext").raw(pickle.FLOAT, b"-1.5e3\n")
        a.uni("none").raw(pickle.NONE)
        a.raw(pickle.SETITEMS)

    small_sd_zip("values_p45", "EMPTY_SET/ADDITEMS/FROZENSET/BINBYTES8/BYTEARRAY8/... beside tensors",
                 p45_values, proto=5, tensors_fn=expect_two, options={"key": "model"})

    # FRAME and STACK_GLOBAL by hand
    def framed(a: Asm, pid: Callable[[Asm], Any]) -> None:
        inner = Asm(None)
        inner.raw(pickle.EMPTY_DICT, pickle.MEMOIZE, pickle.MARK)
        inner.uni("a")
        inner.raw(pickle.SHORT_BINUNICODE, bytes([12]), b"torch._utils", pickle.MEMOIZE)
        inner.raw(pickle.SHORT_BINUNICODE, bytes([18]), b"_rebuild_tensor_v2", pickle.MEMOIZE)
        inner.raw(pickle.STACK_GLOBAL, pickle.MEMOIZE)
        inner.mark()
        inner.mark().uni("storage")
        inner.raw(pickle.SHORT_BINUNICODE, bytes([5]), b"torch", pickle.MEMOIZE)
        inner.raw(pickle.SHORT_BINUNICODE, bytes([12]), b"FloatStorage", pickle.MEMOIZE)
        inner.raw(pickle.STACK_GLOBAL).uni("0").uni("cpu").int_(6).raw(pickle.TUPLE, pickle.BINPERSID)
        inner.int_(0).tuple_of((2, 3)).tuple_of((3, 1)).raw(pickle.NEWFALSE).ordered_dict()
        inner.raw(pickle.TUPLE, pickle.REDUCE)
        split = len(inner.b)  # FRAMEs must not split an opcode
        inner.uni("b").raw(pickle.BINGET, bytes([3]))  # the memoised rebuild function
        inner.mark()
        pid(inner)
        inner.int_(2).tuple_of((2,)).tuple_of((2,)).raw(pickle.NEWFALSE).ordered_dict()
        inner.raw(pickle.TUPLE, pickle.REDUCE, pickle.SETITEMS)
        body = bytes(inner.b)
        a.raw(pickle.FRAME, struct.pack("<Q", split), body[:split])
        a.raw(pickle.FRAME, struct.pack("<Q", len(body) - split), body[split:])

    small_sd_zip("frame_STACK_GLOBAL", "two FRAMEs, STACK_GLOBAL, MEMOIZE, BINGET of a memoised global",
                 framed, proto=4, tensors_fn=expect_two)

    # INST and OBJ calling allowlisted callables
    def inst_obj(a: Asm, pid: Callable[[Asm], Any]) -> None:
        a.mark().raw(pickle.INST, b"collections\nOrderedDict\n", pickle.MARK)
        a.uni("a").mark()
        pid(a)
        a.int_(0).tuple_of((2, 3)).tuple_of((3, 1)).raw(pickle.NEWFALSE).ordered_dict()
        a.raw(pickle.INST, b"torch._utils\n_rebuild_tensor_v2\n")
        a.uni("b").mark().glob("torch._utils", "_rebuild_tensor_v2")
        pid(a)
        a.int_(2).tuple_of((2,)).tuple_of((2,)).raw(pickle.NEWFALSE).ordered_dict()
        a.raw(pickle.OBJ, pickle.SETITEMS)

    small_sd_zip("INST_OBJ_allowlisted", "INST (OrderedDict, rebuild) and OBJ (rebuild)",
                 inst_obj, proto=None, tensors_fn=expect_two)  # type: ignore[arg-type]

    # NEWOBJ and NEWOBJ_EX of OrderedDict / Namespace
    def newobj(a: Asm, pid: Callable[[Asm], Any]) -> None:
        a.raw(pickle.EMPTY_DICT, pickle.MARK)
        a.uni("model").glob("collections", "OrderedDict").raw(pickle.EMPTY_TUPLE, pickle.EMPTY_DICT)
        a.raw(pickle.NEWOBJ_EX, pickle.MARK)
        two_tensors(a, pid)
        a.raw(pickle.SETITEMS)
        a.uni("args").glob("argparse", "Namespace").raw(pickle.EMPTY_TUPLE, pickle.EMPTY_DICT)
        a.raw(pickle.NEWOBJ_EX, pickle.EMPTY_DICT).uni("lr").raw(pickle.BINFLOAT, struct.pack(">d", 0.5))
        a.raw(pickle.SETITEM, pickle.BUILD)
        a.uni("args2").glob("argparse", "Namespace").raw(pickle.EMPTY_TUPLE, pickle.NEWOBJ)
        a.raw(pickle.EMPTY_DICT).uni("epochs").int_(3).raw(pickle.SETITEM, pickle.BUILD)
        a.raw(pickle.SETITEMS)

    small_sd_zip("NEWOBJ_EX", "NEWOBJ_EX of OrderedDict (the model) and Namespace, NEWOBJ + BUILD",
                 newobj, proto=4, tensors_fn=expect_two)

    # _rebuild_tensor_v2 with the 7th `metadata` argument newer torch passes
    def rebuild7(a: Asm, pid: Callable[[Asm], Any]) -> None:
        a.raw(pickle.EMPTY_DICT, pickle.MARK)
        for name, off, shape, stride in (("a", 0, (2, 3), (3, 1)), ("b", 2, (2,), (2,))):
            a.uni(name).glob("torch._utils", "_rebuild_tensor_v2").mark()
            pid(a)
            a.int_(off).tuple_of(shape).tuple_of(stride).raw(pickle.NEWTRUE).ordered_dict()
            a.raw(pickle.EMPTY_DICT).raw(pickle.TUPLE, pickle.REDUCE)
        a.raw(pickle.SETITEMS)

    small_sd_zip("rebuild_v2_metadata", "_rebuild_tensor_v2 with 7 arguments (metadata dict)",
                 rebuild7, tensors_fn=expect_two)

    # Python 2's OrderedDict.__reduce__: OrderedDict([[key, value], ...]) through REDUCE
    def py2_od(a: Asm, pid: Callable[[Asm], Any]) -> None:
        a.glob("collections", "OrderedDict").raw(pickle.MARK, pickle.EMPTY_LIST, pickle.MARK)
        a.raw(pickle.EMPTY_LIST, pickle.MARK).uni("a").tensor(pid, 0, (2, 3), (3, 1)).raw(pickle.APPENDS)
        a.raw(pickle.EMPTY_LIST, pickle.MARK).uni("b").tensor(pid, 2, (2,), (2,)).raw(pickle.APPENDS)
        a.raw(pickle.APPENDS, pickle.TUPLE, pickle.REDUCE)

    small_sd_zip("py2_ordered_dict", "OrderedDict([[k, v], ...]) as Python 2 pickled it",
                 py2_od, tensors_fn=expect_two)

    # storage typename as bytes (Python 2 str unpickled with encoding="bytes"): torch decodes it
    def bytes_typename(a: Asm, pid: Callable[[Asm], Any]) -> None:
        def bpid(x: Asm) -> None:
            x.mark().raw(pickle.SHORT_BINBYTES, bytes([7]), b"storage").glob("torch", "FloatStorage")
            x.uni("0").uni("cpu").int_(6).raw(pickle.TUPLE, pickle.BINPERSID)

        a.raw(pickle.EMPTY_DICT, pickle.MARK)
        a.uni("a").tensor(bpid, 0, (2, 3), (3, 1))
        a.uni("b").tensor(bpid, 2, (2,), (2,))
        a.raw(pickle.SETITEMS)

    small_sd_zip("pid_bytes_typename", "persistent id typename b'storage' (bytes), as torch accepts",
                 bytes_typename, proto=3, tensors_fn=expect_two, expect="ok_or_error")

    # the same key twice in one SETITEMS: the later value wins, as in Python
    def dup_keys(a: Asm, pid: Callable[[Asm], Any]) -> None:
        a.raw(pickle.EMPTY_DICT, pickle.MARK)
        a.uni("a").tensor(pid, 4, (2,), (1,))
        a.uni("b").tensor(pid, 2, (2,), (2,))
        a.uni("a").tensor(pid, 0, (2, 3), (3, 1))
        a.raw(pickle.SETITEMS)

    small_sd_zip("duplicate_keys", "a key set twice: the later value wins", dup_keys,
                 tensors_fn=expect_two, expect="ok_or_error")

    # a list memoised while empty, filled by APPENDS, then fetched again: a reference
    def memo_list(a: Asm, pid: Callable[[Asm], Any]) -> None:
        a.raw(pickle.EMPTY_DICT, pickle.MARK)
        a.uni("a").glob("torch._utils", "_rebuild_tensor_v2").mark()
        pid(a)
        a.int_(0).raw(pickle.EMPTY_LIST, pickle.BINPUT, bytes([9]), pickle.MARK).int_(2).int_(3)
        a.raw(pickle.APPENDS).tuple_of((3, 1)).raw(pickle.NEWFALSE).ordered_dict()
        a.raw(pickle.TUPLE, pickle.REDUCE)
        a.uni("b").glob("torch._utils", "_rebuild_tensor_v2").mark()
        pid(a)
        a.int_(0).raw(pickle.BINGET, bytes([9])).tuple_of((1, 2)).raw(pickle.NEWFALSE).ordered_dict()
        a.raw(pickle.TUPLE, pickle.REDUCE, pickle.SETITEMS)

    small_sd_zip("memo_list_reference", "sizes as a list filled after BINPUT and fetched again by BINGET",
                 memo_list, expect="ok_or_error",
                 tensors_fn=lambda st: {"a": Tensor(st, 0, (2, 3), (3, 1)),
                                        "b": Tensor(st, 0, (2, 3), (1, 2))})

    # OrderedDict with BUILD of (None, slotstate)? keep simple: BUILD with a dict state on OrderedDict
    # clean refusals
    refusals = [
        ("EXT1", pickle.EXT1 + b"\x01", r"EXT|extension|0x82"),
        ("EXT2", pickle.EXT2 + b"\x01\x00", r"EXT|extension|0x83"),
        ("EXT4", pickle.EXT4 + b"\x01\x00\x00\x00", r"EXT|extension|0x84"),
        ("NEXT_BUFFER", pickle.NEXT_BUFFER, r"BUFFER|buffer|0x97"),
        ("READONLY_BUFFER", pickle.NEXT_BUFFER + pickle.READONLY_BUFFER, r"BUFFER|buffer|0x97"),
        ("PERSID", pickle.PERSID + b"0\n", None),
        ("unknown_opcode_ff", b"\xff", r"0xff"),
        ("unknown_opcode_Z", b"Z", r"0x5a"),
    ]
    for label, code, msg in refusals:
        def refuse(a: Asm, pid: Callable[[Asm], Any], code: bytes = code) -> None:
            a.raw(pickle.EMPTY_DICT, pickle.MARK)
            a.uni("a").tensor(pid, 0, (2, 3), (3, 1))
            a.uni("b").raw(code)
            a.raw(pickle.SETITEMS)

        small_sd_zip(f"refuse_{label}", f"{label} is refused cleanly", refuse, proto=5,
                     expect="error", message=msg)

    def proto6(a: Asm, pid: Callable[[Asm], Any]) -> None:
        a.raw(pickle.EMPTY_DICT, pickle.MARK)
        a.uni("a").tensor(pid, 0, (2, 3), (3, 1))
        a.raw(pickle.SETITEMS)

    small_sd_zip("refuse_PROTO_6", "PROTO 6 is refused", proto6, proto=6, expect="error")


# --- hostile files ----------------------------------------------------------------

GOOD_VALUES = [1.0, 2.0, 3.0, 4.0]


def hostile(
    name: str,
    what: str,
    evil: Callable[[Asm], Any],
    message: str | None = None,
    expect: str = "error",
    proto: int = 2,
    numel: int = 4,
    aside: bool = False,
    evil_tensor: Tensor | None = None,
    fuzz: bool = False,
) -> None:
    """A state dict {"good": tensor, "evil": <evil>} (or the evil value beside
    the model under "junk" when `aside`), in a torch zip with storage "0"."""
    st = f32(GOOD_VALUES)
    st.key = "0"
    a = Asm(proto)
    good = Tensor(st, 0, (4,), (1,))

    def pid(x: Asm) -> None:
        x.pid("torch", "FloatStorage", "0", numel)

    if aside:
        a.raw(pickle.EMPTY_DICT, pickle.MARK).uni("model")
        a.raw(pickle.EMPTY_DICT).uni("good").tensor(pid, 0, (4,), (1,)).raw(pickle.SETITEM)
        a.uni("junk")
        evil(a)
        a.raw(pickle.SETITEMS)
    else:
        a.raw(pickle.EMPTY_DICT, pickle.MARK).uni("good").tensor(pid, 0, (4,), (1,))
        a.uni("evil")
        evil(a)
        a.raw(pickle.SETITEMS)
    data = torch_zip(a.stop(), {"0": st})
    tensors: dict[str, Tensor] | None = {"good": good} if expect != "error" else None
    if tensors is not None and evil_tensor is not None:
        tensors["evil"] = evil_tensor
    add(name, data, "hostile", what, tensors=tensors, expect=expect, message=message,
        options={"key": "model"} if aside else None, fuzz=fuzz)
    st.key = None


def call(a: Asm, module: str, fn: str, *args: str) -> None:
    a.glob(module, fn).mark()
    for s in args:
        a.uni(s)
    a.raw(pickle.TUPLE, pickle.REDUCE)


def std_tensor(a: Asm, offset: int, shape: tuple[int, ...], stride: tuple[int, ...], numel: int = 4,
               cls: tuple[str, str] = ("torch", "FloatStorage"), key: str = "0") -> Asm:
    return a.tensor(lambda x: x.pid(cls[0], cls[1], key, numel), offset, shape, stride)


def hostile_cases() -> None:
    cmd = "touch /tmp/tost_pwned"
    # code execution attempts where a tensor is expected
    hostile("reduce_posix_system", "REDUCE of posix.system (what pickle writes for os.system)",
            lambda a: call(a, "posix", "system", cmd), r"posix[. ]system")
    hostile("reduce_os_system", "REDUCE of os.system", lambda a: call(a, "os", "system", cmd),
            r"os[. ]system", fuzz=True)
    hostile("reduce_builtins_eval", "REDUCE of builtins.eval",
            lambda a: call(a, "builtins", "eval", "__import__('os').system('true')"),
            r"builtins[. ]eval")
    hostile("reduce_builtin_eval_py2", "REDUCE of __builtin__.eval (Python 2 spelling)",
            lambda a: call(a, "__builtin__", "eval", "1"), r"eval")
    hostile("reduce_subprocess_popen", "REDUCE of subprocess.Popen",
            lambda a: (a.glob("subprocess", "Popen").raw(pickle.EMPTY_LIST, pickle.MARK)
                       .uni("sh").uni("-c").uni(cmd).raw(pickle.APPENDS, pickle.TUPLE1, pickle.REDUCE)),
            r"subprocess[. ]Popen")
    hostile("stack_global_system", "STACK_GLOBAL os.system + REDUCE",
            lambda a: a.uni("os").uni("system").raw(pickle.STACK_GLOBAL).uni(cmd)
            .raw(pickle.TUPLE1, pickle.REDUCE), r"os[. ]system", proto=4)
    hostile("inst_system", "INST os.system",
            lambda a: a.mark().uni(cmd).raw(pickle.INST, b"os\nsystem\n"), r"os[. ]system")
    hostile("obj_system", "OBJ os.system",
            lambda a: a.mark().glob("os", "system").uni(cmd).raw(pickle.OBJ), r"os[. ]system")
    hostile("newobj_popen", "NEWOBJ subprocess.Popen",
            lambda a: a.glob("subprocess", "Popen").uni(cmd).raw(pickle.TUPLE1, pickle.NEWOBJ),
            r"subprocess[. ]Popen")
    hostile("newobj_ex_eval", "NEWOBJ_EX builtins.eval",
            lambda a: a.glob("builtins", "eval").uni("1").raw(pickle.TUPLE1, pickle.EMPTY_DICT,
                                                              pickle.NEWOBJ_EX),
            r"builtins[. ]eval", proto=4)
    hostile("build_setstate_system", "BUILD that plants __setstate__ = os.system, then BUILD again",
            lambda a: (a.glob("collections", "OrderedDict").raw(pickle.EMPTY_TUPLE, pickle.NEWOBJ)
                       .raw(pickle.EMPTY_DICT).uni("__setstate__").glob("os", "system")
                       .raw(pickle.SETITEM, pickle.BUILD).uni(cmd).raw(pickle.BUILD)),
            r"os[. ]system")
    hostile("build_nonallowlisted", "NEWOBJ + BUILD of torch.nn.Linear where a tensor is expected",
            lambda a: (a.glob("torch.nn", "Linear").raw(pickle.EMPTY_TUPLE, pickle.NEWOBJ)
                       .raw(pickle.EMPTY_DICT).uni("in_features").int_(4)
                       .raw(pickle.SETITEM, pickle.BUILD)),
            r"torch\.nn[. ]Linear|Linear")
    hostile("reduce_torch_load", "REDUCE of torch.load (a torch global not on the allowlist)",
            lambda a: call(a, "torch", "load", "/etc/passwd"), r"torch[. ]load")
    hostile("reduce_rebuild_qtensor", "torch._utils._rebuild_qtensor is not supported",
            lambda a: a.tensor(lambda x: x.pid("torch", "FloatStorage", "0", 4), 0, (4,), (1,),
                               rebuild=("torch._utils", "_rebuild_qtensor")),
            r"_rebuild_qtensor")
    hostile("global_in_pid", "the storage class in the persistent id is os.system",
            lambda a: std_tensor(a, 0, (4,), (1,), cls=("os", "system")), r"os[. ]system")
    hostile("system_aside", "REDUCE of os.system beside the model (not where a tensor is expected)",
            lambda a: call(a, "os", "system", cmd), expect="ok_or_error", aside=True)

    # storages of unknown or unsupported kinds
    hostile("storage_complex", "torch.ComplexFloatStorage is unsupported",
            lambda a: std_tensor(a, 0, (2,), (1,), cls=("torch", "ComplexFloatStorage")),
            r"ComplexFloatStorage")
    hostile("storage_qint8", "torch.QInt8Storage is unsupported",
            lambda a: std_tensor(a, 0, (2,), (1,), cls=("torch", "QInt8Storage")), r"QInt8Storage")
    hostile("storage_untyped", "torch.storage.UntypedStorage has no dtype",
            lambda a: std_tensor(a, 0, (2,), (1,), cls=("torch.storage", "UntypedStorage")),
            r"UntypedStorage")
    hostile("pid_not_storage", "persistent id of a kind other than 'storage'",
            lambda a: a.tensor(lambda x: (x.mark().uni("module").glob("torch", "FloatStorage")
                                          .uni("0").uni("cpu").int_(4)
                                          .raw(pickle.TUPLE, pickle.BINPERSID)),
                               0, (4,), (1,)))
    hostile("pid_short", "persistent id tuple with 3 elements",
            lambda a: a.tensor(lambda x: (x.mark().uni("storage").glob("torch", "FloatStorage")
                                          .uni("0").raw(pickle.TUPLE, pickle.BINPERSID)),
                               0, (4,), (1,)))
    hostile("pid_int", "persistent id that is an int",
            lambda a: a.tensor(lambda x: x.int_(0).raw(pickle.BINPERSID), 0, (4,), (1,)))
    hostile("missing_storage_entry", "persistent id names data/7, which the zip lacks",
            lambda a: std_tensor(a, 0, (4,), (1,), key="7"), r"7")
    hostile("storage_key_traversal", "storage key '../../etc/passwd'",
            lambda a: std_tensor(a, 0, (4,), (1,), key="../../etc/passwd"))

    # tensor views that do not fit their storage
    for label, offset, shape, stride in [
        ("size_exceeds", 0, (5,), (1,)),
        ("offset_exceeds", 4, (1,), (1,)),
        ("offset_plus_size_exceeds", 2, (3,), (1,)),
        ("stride_exceeds", 0, (3,), (2,)),
        ("stride_2d_exceeds", 0, (2, 2), (3, 1)),
        ("negative_offset", -1, (2,), (1,)),
        ("negative_stride", 3, (2,), (-1,)),
        ("negative_size", 0, (-1,), (1,)),
        ("rank_mismatch", 0, (2, 2), (1,)),
    ]:
        hostile(f"view_{label}", f"tensor view outside its 4-element storage: offset {offset}, "
                f"shape {shape}, stride {stride}",
                lambda a, o=offset, sh=shape, sd_=stride: std_tensor(a, o, sh, sd_))
    hostile("view_offset_float", "storage offset given as the float 1.5",
            lambda a: a.glob("torch._utils", "_rebuild_tensor_v2").mark().pid("torch", "FloatStorage", "0", 4)
            .raw(pickle.BINFLOAT, struct.pack(">d", 1.5)).tuple_of((4,)).tuple_of((1,))
            .raw(pickle.NEWFALSE).ordered_dict().raw(pickle.TUPLE, pickle.REDUCE))
    hostile("view_shape_string", "shape given as a string",
            lambda a: a.glob("torch._utils", "_rebuild_tensor_v2").mark().pid("torch", "FloatStorage", "0", 4)
            .int_(0).uni("4").tuple_of((1,))
            .raw(pickle.NEWFALSE).ordered_dict().raw(pickle.TUPLE, pickle.REDUCE))
    hostile("rebuild_too_few_args", "_rebuild_tensor_v2 with 2 arguments",
            lambda a: a.glob("torch._utils", "_rebuild_tensor_v2").mark().pid("torch", "FloatStorage", "0", 4)
            .int_(0).raw(pickle.TUPLE, pickle.REDUCE))
    hostile("numel_exceeds_entry", "persistent id declares 1000 elements, data/0 holds 4",
            lambda a: std_tensor(a, 0, (4,), (1,), numel=1000), numel=1000)

    # sizes meant to exhaust memory
    hostile("numel_2_62", "persistent id declares 2^62 elements",
            lambda a: std_tensor(a, 0, (2**62,), (1,), numel=2**62), numel=2**62)
    hostile("shape_huge_stride0", "shape (2^31, 2^31, 2^31) on one element with stride 0",
            lambda a: std_tensor(a, 0, (2**31, 2**31, 2**31), (0, 0, 0)))
    hostile("shape_2_33_stride0", "shape (2^33,) with stride 0: 32 GiB to materialise",
            lambda a: std_tensor(a, 0, (2**33,), (0,)))
    hostile("shape_overflow_u64", "shape (2^32, 2^32, 16) whose product overflows 64 bits",
            lambda a: std_tensor(a, 0, (2**32, 2**32, 16), (0, 0, 0)))
    hostile("shape_2_64", "a dimension of 2^64 + 1 (LONG1)",
            lambda a: std_tensor(a, 0, (2**64 + 1,), (0,)))

    # memo abuse
    hostile("memo_get_unset", "BINGET of a memo slot never set",
            lambda a: a.raw(pickle.BINGET, bytes([200])))
    hostile("memo_long_get_unset", "LONG_BINGET 2^32-1, never set",
            lambda a: a.raw(pickle.LONG_BINGET, struct.pack("<I", 0xFFFFFFFF)))
    hostile("memo_get_text_unset", "GET 99999999999999999999 (text), never set",
            lambda a: a.raw(pickle.GET, b"99999999999999999999\n"))
    hostile("memo_put_huge_index", "LONG_BINPUT 2^32-1 then LONG_BINGET it: valid, must not allocate",
            lambda a: (std_tensor(a, 0, (4,), (1,)).raw(pickle.LONG_BINPUT, struct.pack("<I", 0xFFFFFFFF),
                                                        pickle.POP, pickle.LONG_BINGET,
                                                        struct.pack("<I", 0xFFFFFFFF))),
            expect="ok_or_error", evil_tensor=Tensor(f32(GOOD_VALUES), 0, (4,), (1,)))
    hostile("memo_put_empty_stack", "BINPUT with an empty stack",
            lambda a: a.raw(pickle.POP_MARK, pickle.BINPUT, b"\x01"))

    def laughs(a: Asm) -> None:
        # memo indices small enough to be plausible for the pickle's length
        a.uni("lol").raw(pickle.LONG_BINPUT, struct.pack("<I", 100), pickle.POP)
        for i in range(100, 140):
            a.raw(pickle.LONG_BINGET, struct.pack("<I", i)).raw(pickle.DUP, pickle.TUPLE2)
            a.raw(pickle.LONG_BINPUT, struct.pack("<I", i + 1))
            if i + 1 < 140:
                a.raw(pickle.POP)

    hostile("billion_laughs_aside", "2^40 leaves shared through the memo, beside the model",
            laughs, expect="ok_or_error", aside=True)
    hostile("billion_laughs_tensor_slot", "2^40 shared leaves where a tensor is expected", laughs)

    def cycle(a: Asm) -> None:
        a.raw(pickle.EMPTY_LIST, pickle.LONG_BINPUT, struct.pack("<I", 100))
        a.raw(pickle.LONG_BINGET, struct.pack("<I", 100), pickle.APPEND)

    hostile("cycle_aside", "a list that contains itself, beside the model", cycle,
            expect="ok_or_error", aside=True)
    hostile("cycle_tensor_slot", "a list that contains itself where a tensor is expected", cycle)

    def self_dict(a: Asm) -> None:
        a.raw(pickle.EMPTY_DICT, pickle.LONG_BINPUT, struct.pack("<I", 100))
        a.uni("self").raw(pickle.LONG_BINGET, struct.pack("<I", 100), pickle.SETITEM)

    hostile("cycle_dict_aside", "a dict that contains itself, beside the model", self_dict,
            expect="ok_or_error", aside=True)

    # nesting bombs
    depth = 50_000

    def nest_lists(a: Asm) -> None:
        a.raw(pickle.EMPTY_LIST * depth, pickle.APPEND * (depth - 1))

    def nest_tuples(a: Asm) -> None:
        a.raw(pickle.MARK * depth, pickle.TUPLE * depth)

    def nest_dicts(a: Asm) -> None:
        for _ in range(depth // 4):
            a.raw(pickle.EMPTY_DICT, pickle.SHORT_BINUNICODE, b"\x01k")
        a.raw(pickle.NONE, pickle.SETITEM * (depth // 4))

    for label, fn in (("lists", nest_lists), ("tuples", nest_tuples), ("dicts", nest_dicts)):
        hostile(f"nest_{label}_aside", f"{depth}-deep nested {label} beside the model", fn,
                expect="ok_or_error", aside=True)
        hostile(f"nest_{label}_tensor_slot", f"{depth}-deep nested {label} where a tensor is expected",
                fn)
    hostile("marks_unclosed", "200000 MARKs never closed",
            lambda a: a.raw(pickle.MARK * 200_000))

    # huge declared lengths in a tiny file
    hostile("binunicode_huge", "BINUNICODE of length 2^32-1",
            lambda a: a.raw(pickle.BINUNICODE, struct.pack("<I", 0xFFFFFFFF), b"abc"))
    hostile("binunicode8_huge", "BINUNICODE8 of length 2^62",
            lambda a: a.raw(pickle.BINUNICODE8, struct.pack("<Q", 2**62), b"abc"), proto=4)
    hostile("binbytes8_huge", "BINBYTES8 of length 2^64-1",
            lambda a: a.raw(pickle.BINBYTES8, struct.pack("<Q", 2**64 - 1), b"abc"), proto=4)
    hostile("bytearray8_huge", "BYTEARRAY8 of length 2^63",
            lambda a: a.raw(pickle.BYTEARRAY8, struct.pack("<Q", 2**63), b"abc"), proto=5)
    hostile("binstring_negative", "BINSTRING of length -1",
            lambda a: a.raw(pickle.BINSTRING, struct.pack("<i", -1), b"abc"))
    hostile("long4_huge", "LONG4 of length 2^31-1",
            lambda a: a.raw(pickle.LONG4, struct.pack("<i", 2**31 - 1), b"\x01"))
    hostile("long4_negative", "LONG4 of negative length",
            lambda a: a.raw(pickle.LONG4, struct.pack("<i", -5), b"\x01"))
    hostile("long_text_huge_aside", "LONG with 100000 decimal digits, beside the model",
            lambda a: a.raw(pickle.LONG, b"9" * 100_000, b"L\n"), expect="ok_or_error", aside=True)
    hostile("long_text_huge_shape", "a shape dimension given as a 100000-digit LONG",
            lambda a: a.glob("torch._utils", "_rebuild_tensor_v2").mark().pid("torch", "FloatStorage", "0", 4)
            .int_(0).raw(pickle.MARK, pickle.LONG, b"9" * 100_000, b"\n", pickle.TUPLE)
            .tuple_of((1,)).raw(pickle.NEWFALSE).ordered_dict().raw(pickle.TUPLE, pickle.REDUCE))
    hostile("frame_huge", "FRAME announcing 2^63 bytes",
            lambda a: a.raw(pickle.FRAME, struct.pack("<Q", 2**63)), expect="ok_or_error", aside=True,
            proto=4)
    hostile("string_unterminated", "STRING with no closing quote",
            lambda a: a.raw(pickle.STRING, b"'abc\n"))
    hostile("int_garbage", "INT with garbage digits",
            lambda a: a.raw(pickle.INT, b"12x4\n"))
    hostile("stack_underflow", "REDUCE on an empty stack (after POP_MARK)",
            lambda a: a.raw(pickle.POP_MARK, pickle.REDUCE))
    hostile("setitems_no_mark", "TUPLE with no MARK (mark stack empty after POP_MARK)",
            lambda a: a.raw(pickle.POP_MARK, pickle.TUPLE))


def container_cases() -> None:
    st = storage("F32", 16, 70)
    st2 = storage("I64", 3, 71)
    t = {"w": dense(st, (4, 4)), "n": dense(st2, (3,)), "w_t": Tensor(st, 1, (2, 2), (4, 1))}
    obj = collections.OrderedDict(t)
    reset_keys(obj)
    pkl, storages = dumps(obj, 2)
    good = torch_zip(pkl, storages)
    add("base_zip", good, "edge", "the untouched base of the corrupted zips below", tensors=t, fuzz=True)

    # truncations
    eocd = good.rfind(b"PK\x05\x06")
    cd = good.find(b"PK\x01\x02")
    cuts = {
        "empty": 0,
        "4_bytes": 4,
        "in_first_header": 20,
        "in_pickle": 100,
        "in_storage": len(good) // 2,
        "before_central": cd,
        "in_central": cd + 30,
        "in_eocd": eocd + 10,
        "last_byte": len(good) - 1,
    }
    for label, n in cuts.items():
        add(f"zip_truncated_{label}", good[:n], "hostile", f"the zip cut to {n} bytes", expect="error")

    def patched(off: int, new: bytes) -> bytes:
        b = bytearray(good)
        b[off:off + len(new)] = new
        return bytes(b)

    cd_offset = struct.unpack_from("<I", good, eocd + 16)[0]
    cd_size = struct.unpack_from("<I", good, eocd + 12)[0]
    add("zip_bad_eocd_signature", patched(eocd, b"PK\x05\x07"), "hostile",
        "end of central directory signature corrupted", expect="error")
    add("zip_cd_offset_outside", patched(eocd + 16, struct.pack("<I", len(good) + 100)), "hostile",
        "central directory offset beyond the file", expect="error")
    add("zip_cd_size_huge", patched(eocd + 12, struct.pack("<I", 0xFFFFFFF0)), "hostile",
        "central directory size 4 GiB", expect="error")
    add("zip_entry_count_huge", patched(eocd + 8, struct.pack("<HH", 0xFFFF, 0xFFFF)), "hostile",
        "entry count 65535 with 8 entries present", expect="error")
    add("zip_bad_local_signature", patched(0, b"PK\x03\x05"), "hostile",
        "data.pkl local header signature corrupted", expect="error")
    # entry sizes: data.pkl's central record claims more bytes than the file has
    add("zip_entry_size_beyond_file", patched(cd + 20, struct.pack("<II", 0x7FFFFFFF, 0x7FFFFFFF)),
        "hostile", "data.pkl sizes 2 GiB in the central directory", expect="error")
    # local header offset of data.pkl points past the end
    add("zip_local_offset_outside", patched(cd + 42, struct.pack("<I", len(good) + 1000)), "hostile",
        "data.pkl local header offset beyond the file", expect="error")
    # crc: explicit policy: a CRC-32 mismatch is an error (for data.pkl and for storages)
    pkl_at = 64
    add("zip_crc_pickle", patched(pkl_at + 3, bytes([good[pkl_at + 3] ^ 0x01])), "hostile",
        "one byte of data.pkl flipped (CRC-32 mismatch; the pickle may still parse)", expect="error",
        message=r"[Cc][Rr][Cc]")
    first_storage = good.find(b"PK\x03\x04", good.find(b"/data/0") - 40)
    name_len, extra_len = struct.unpack_from("<HH", good, first_storage + 26)
    data_at = first_storage + 30 + name_len + extra_len
    add("zip_crc_storage", patched(data_at + 1, bytes([good[data_at + 1] ^ 0x40])), "hostile",
        "one byte of storage data/0 flipped (CRC-32 mismatch)", expect="error", message=r"[Cc][Rr][Cc]")
    # compressed entries are not what torch writes
    deflated = io.BytesIO()
    with zipfile.ZipFile(deflated, "w", zipfile.ZIP_DEFLATED) as z:
        with zipfile.ZipFile(io.BytesIO(good)) as src:
            for info in src.infolist():
                zi = zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0))
                zi.compress_type = zipfile.ZIP_DEFLATED
                z.writestr(zi, src.read(info.filename))
    add("zip_deflated", deflated.getvalue(), "hostile",
        "entries deflate-compressed (torch never writes this): load correctly or refuse",
        expect="ok_or_error", tensors=t)
    # missing data.pkl / two archives / not a zip at all
    with zipfile.ZipFile(io.BytesIO(good)) as src:
        names = src.namelist()
        entries = [(n, src.read(n)) for n in names]
    add("zip_no_data_pkl", write_zip([e for e in entries if not e[0].endswith("data.pkl")]), "hostile",
        "zip without data.pkl", expect="error", message=r"data\.pkl")
    add("zip_two_archives", write_zip(entries + [("other/data.pkl", pkl)]), "hostile",
        "two archive directories with data.pkl", expect="ok_or_error", tensors=t)
    add("zip_duplicate_storage", write_zip(entries + [(entries[4][0], b"\x00" * len(entries[4][1]))]),
        "hostile", "a storage entry name appears twice", expect="ok_or_error", tensors=None)
    add("not_a_checkpoint", b"this is not a checkpoint\n" * 10, "hostile", "plain text", expect="error")
    add("bare_pickle", pkl, "hostile", "a bare pickle: neither zip nor legacy", expect="error")
    rng = random.Random(5)
    add("random_bytes", bytes(rng.randrange(256) for _ in range(4096)), "hostile", "random bytes",
        expect="error")

    # EOCD comments (a zip tool may add one): a plain comment, and one holding a fake EOCD
    def with_comment(comment: bytes) -> bytes:
        return good[:-2] + struct.pack("<H", len(comment)) + comment

    add("zip_comment", with_comment(b"re-zipped by some tool"), "edge",
        "end of central directory record followed by a comment", tensors=t)
    fake = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, 46, 0, 0)
    add("zip_comment_fake_eocd", with_comment(b"x" + fake + b"y"), "hostile",
        "the comment holds a fake end-of-central-directory record", expect="ok_or_error", tensors=t)
    # local header disagrees with the central directory about the name
    b_ = bytearray(good)
    b_[30:30 + len("archive/data.pkl")] = b"archive/data.pkX"
    add("zip_local_name_mismatch", bytes(b_), "hostile",
        "data.pkl's local header names another file", expect="ok_or_error", tensors=t)
    # local header extra length runs past the end of the file
    add("zip_local_extra_beyond", patched(28, struct.pack("<H", 0xFFFF))[:200] + good[200:],
        "hostile", "data.pkl's local extra field length 65535", expect="error")
    # data descriptor CRC differs from the central directory's (which is right)
    pkl_size = struct.unpack_from("<I", good, cd + 20)[0]
    add("zip_descriptor_crc_mismatch", patched(64 + pkl_size + 4, b"\0\0\0\0"), "hostile",
        "data.pkl's data descriptor CRC-32 is wrong, the central directory's right",
        expect="ok_or_error", tensors=t)
    # zip64 structure
    reset_keys(obj)
    pkl64, storages64 = dumps(obj, 2)
    z64 = torch_zip(pkl64, storages64, zip64=True)
    loc = z64.rfind(b"PK\x06\x07")
    e64 = z64.rfind(b"PK\x06\x06")

    def patched64(off: int, new: bytes) -> bytes:
        b = bytearray(z64)
        b[off:off + len(new)] = new
        return bytes(b)

    add("zip64_locator_bad", patched64(loc + 8, struct.pack("<Q", 2**62)), "hostile",
        "zip64 end-of-central-directory locator points at 2^62", expect="error")
    add("zip64_cd_offset_huge", patched64(e64 + 48, struct.pack("<Q", 2**63 - 1)), "hostile",
        "zip64 central directory offset 2^63-1", expect="error")
    add("zip64_entry_count_huge", patched64(e64 + 24, struct.pack("<QQ", 2**40, 2**40)), "hostile",
        "zip64 entry count 2^40", expect="error")
    cd64 = struct.unpack_from("<Q", z64, e64 + 48)[0]
    name_len = struct.unpack_from("<H", z64, cd64 + 28)[0]
    add("zip64_entry_size_huge", patched64(cd64 + 46 + name_len + 4, struct.pack("<QQ", 2**62, 2**62)),
        "hostile", "data.pkl's zip64 sizes 2^62", expect="error")

    # legacy corruptions
    st_a = storage("F32", 6, 72)
    t_leg = {"a": dense(st_a, (2, 3))}
    obj = collections.OrderedDict(t_leg)
    reset_keys(obj)
    st_a.key = "5"
    leg = legacy_file(obj)
    add("legacy_base", leg, "edge", "untouched base of the legacy corruptions", tensors=t_leg, fuzz=True)
    add("legacy_wrong_count", legacy_file(obj, counts={"5": 7}), "hostile",
        "legacy storage element count 7 where the pickle says 6", expect="error")
    add("legacy_missing_key", legacy_file(obj, order=[]), "hostile",
        "legacy storage key list omits a storage the pickle uses", expect="error")
    huge = storage("F32", 4, 73)
    huge.key, huge.declared_numel = "3", 2**40
    add("legacy_count_huge", legacy_file(collections.OrderedDict({"a": Tensor(huge, 0, (4,), (1,))})),
        "hostile", "legacy storage of 2^40 elements (pickle and count agree) backed by 16 bytes",
        expect="error")
    add("legacy_truncated_data", leg[:-3], "hostile", "legacy storage bytes cut short", expect="error")
    add("legacy_trailing_bytes", leg + b"\0" * 16, "hostile", "16 bytes after the last storage",
        expect="ok_or_error", tensors=t_leg)
    add("legacy_truncated_pickle", leg[:40], "hostile", "legacy file cut inside the pickles",
        expect="error")
    bad_magic = io.BytesIO()
    pickle.dump(0x1950A86A20F9469CFC6D, bad_magic, protocol=2)
    add("legacy_bad_magic", bad_magic.getvalue() + leg[len(bad_magic.getvalue()):], "hostile",
        "legacy magic number off by one", expect="error")
    head = io.BytesIO()
    pickle.dump(LEGACY_MAGIC, head, protocol=2)
    magic_len = len(head.getvalue())
    pickle.dump(1000, head, protocol=2)
    proto_len = len(head.getvalue()) - magic_len
    add("legacy_bad_protocol", head.getvalue() + leg[magic_len + proto_len:], "hostile",
        "legacy protocol 1000 instead of 1001", expect="error")
    sys_evil = io.BytesIO()
    sys_evil.write(head.getvalue()[:magic_len])
    pickle.dump(1001, sys_evil, protocol=2)
    sysinfo_start = len(sys_evil.getvalue())
    a = Asm(2)
    call(a, "os", "system", "true")
    evil_sys = a.stop()
    rest = leg[sysinfo_start:]
    # skip the real sys info pickle
    sysinfo_len = len(pickle.dumps(LEGACY_SYS_INFO, protocol=2))
    add("legacy_evil_sys_info", sys_evil.getvalue() + evil_sys + rest[sysinfo_len:], "hostile",
        "legacy sys info pickle is an os.system call", expect="error", message=r"os[. ]system")



# ---------------------------------------------------------------------------
# A restricted stdlib reader: checks the generated "ok" files and computes the
# expected tensors of the real fixtures. It never imports torch and resolves only
# the allowlisted globals.


@dataclass
class RefStorage:
    dtype: str
    key: str
    numel: int
    _data: bytes | None = None
    root: "RefStorage | None" = None
    view_offset: int = 0

    @property
    def data(self) -> bytes | None:
        if self.root is not None:
            size = DTYPES[self.dtype][1]
            root = self.root.data
            assert root is not None
            return root[self.view_offset * size:(self.view_offset + self.numel) * size]
        return self._data

    @data.setter
    def data(self, value: bytes) -> None:
        self._data = value


@dataclass
class RefTensor:
    storage: RefStorage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    def materialise(self) -> bytes:
        size = DTYPES[self.storage.dtype][1]
        data = self.storage.data
        assert data is not None and len(data) == self.storage.numel * size, self.storage
        n = math.prod(self.shape)
        if n and (self.offset < 0 or self.offset + sum((d - 1) * s for d, s in zip(self.shape, self.stride))
                  >= self.storage.numel):
            raise ValueError("view outside storage")
        out = bytearray()
        for flat in range(n):
            rem, idx = flat, self.offset
            for dim in reversed(range(len(self.shape))):
                idx += (rem % self.shape[dim]) * self.stride[dim]
                rem //= self.shape[dim]
            out += data[idx * size:(idx + 1) * size]
        return bytes(out)


class _StorageType:
    def __init__(self, name: str):
        self.name = name


def _ref_rebuild(storage: RefStorage, offset: int, size: tuple, stride: tuple, *_rest: Any) -> RefTensor:
    if not isinstance(storage, RefStorage) or len(size) != len(stride):
        raise ValueError("bad rebuild arguments")
    return RefTensor(storage, offset, tuple(size), tuple(stride))


def _ref_parameter(data: RefTensor, *_rest: Any) -> RefTensor:
    return data


class RefUnpickler(pickle._Unpickler):  # type: ignore[name-defined]
    ALLOWED: dict[tuple[str, str], Any] = {
        ("torch._utils", "_rebuild_tensor_v2"): _ref_rebuild,
        ("torch._utils", "_rebuild_parameter"): _ref_parameter,
        ("torch._utils", "_rebuild_tensor"): _ref_rebuild,
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("argparse", "Namespace"): argparse.Namespace,
        ("copyreg", "_reconstructor"): __import__("copyreg")._reconstructor,
        ("copy_reg", "_reconstructor"): __import__("copyreg")._reconstructor,  # what Python 3 writes at protocol < 3
        ("builtins", "object"): object,
        ("_codecs", "encode"): __import__("codecs").encode,  # bytes below protocol 3
        ("__builtin__", "bytes"): bytes,
        ("__builtin__", "set"): set,
        ("__builtin__", "frozenset"): frozenset,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("builtins", "bytearray"): bytearray,
        ("__builtin__", "bytearray"): bytearray,
        ("__builtin__", "object"): object,
    }

    def __init__(self, f: Any, storages: dict[str, RefStorage], loader: Callable[[str], bytes] | None):
        super().__init__(f, encoding="utf-8")
        self.storages = storages
        self.loader = loader
        self.views: dict[str, RefStorage] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module in ("torch", "torch.cuda") and name in STORAGE_TO_DTYPE:
            return _StorageType(name)
        if (module, name) in self.ALLOWED:
            return self.ALLOWED[(module, name)]
        raise pickle.UnpicklingError(f"global {module}.{name} refused")

    def persistent_load(self, pid: Any) -> Any:
        if not isinstance(pid, tuple) or len(pid) not in (5, 6):
            raise pickle.UnpicklingError("bad pid")
        kind, cls, key, _loc, numel = pid[:5]
        kind = kind.decode() if isinstance(kind, bytes) else kind  # as torch's _maybe_decode_ascii
        if kind != "storage" or not isinstance(cls, _StorageType):
            raise pickle.UnpicklingError("bad pid")
        if key not in self.storages:
            st = RefStorage(STORAGE_TO_DTYPE[cls.name], key, numel)
            if self.loader is not None:
                st.data = self.loader(key)
            self.storages[key] = st
        if len(pid) == 6 and pid[5] is not None:
            view_key, offset, size = pid[5]
            if view_key not in self.views:
                root = self.storages[key]
                self.views[view_key] = RefStorage(root.dtype, view_key, size, root=root, view_offset=offset)
            return self.views[view_key]
        return self.storages[key]


def ref_load(data: bytes) -> Any:
    if data[:4] == b"PK\x03\x04":
        z = zipfile.ZipFile(io.BytesIO(data))
        pkls = [n for n in z.namelist() if n.endswith("/data.pkl")]
        prefix = pkls[0][: -len("data.pkl")]
        big = z.read(f"{prefix}byteorder") == b"big"

        unp = RefUnpickler(io.BytesIO(z.read(pkls[0])), {}, lambda k: z.read(f"{prefix}data/{k}"))
        obj = unp.load()
        if big:
            for st in unp.storages.values():
                size = DTYPES[st.dtype][1]
                raw = st._data or b""
                st.data = b"".join(raw[i:i + size][::-1] for i in range(0, len(raw), size))
        return obj
    f = io.BytesIO(data)
    storages: dict[str, RefStorage] = {}
    assert RefUnpickler(f, storages, None).load() == LEGACY_MAGIC
    assert RefUnpickler(f, storages, None).load() == 1001
    RefUnpickler(f, storages, None).load()
    obj = RefUnpickler(f, storages, None).load()
    keys = RefUnpickler(f, storages, None).load()
    for key in keys:
        (count,) = struct.unpack("<q", f.read(8))
        st = storages[key]
        assert count == st.numel
        st.data = f.read(count * DTYPES[st.dtype][1])
    return obj


def ref_state_dict(obj: Any, key: str | None) -> dict[str, RefTensor]:
    if key is not None:
        obj = obj[key]
    elif isinstance(obj, dict) and "model" in obj and not isinstance(obj["model"], RefTensor):
        obj = obj["model"]
    out = {}
    for name, value in obj.items():
        if isinstance(value, RefTensor):
            for prefix in ("_orig_mod.", "module."):
                if name.startswith(prefix):
                    name = name[len(prefix):]
            out[name] = value
    return out


def self_check() -> None:
    """Load every case meant to load with the reference reader; compare."""
    for case in CASES:
        if "tensors" not in case:
            continue
        try:
            got = ref_state_dict(ref_load(FILES[case["file"]]), case.get("options", {}).get("key"))
        except Exception as err:  # noqa: BLE001
            if case["expect"] == "ok":
                raise AssertionError(f"{case['name']}: reference reader failed: {err!r}") from err
            continue
        want = case["tensors"]
        assert set(got) == set(want), (case["name"], sorted(got), sorted(want))
        for name, t in got.items():
            w = want[name]
            assert t.storage.dtype == w["dtype"] and list(t.shape) == w["shape"], (case["name"], name)
            assert t.materialise().hex() == w["hex"], (case["name"], name)


def check_opcode_coverage() -> None:
    """Every opcode of protocols 0 to 5 occurs in some fixture that is not hostile."""
    seen: set[str] = set()
    for case in CASES:
        if case["kind"] == "hostile":
            continue
        data = FILES[case["file"]]
        if data[:2] == b"PK":
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                streams = [io.BytesIO(z.read(n)) for n in z.namelist() if n.endswith("data.pkl")]
        else:
            streams = [io.BytesIO(data)] * 5  # the legacy file's pickles, one after another
        for f in streams:
            try:
                for op, _arg, _pos in pickletools.genops(f):
                    seen.add(op.name)
                    if op.name == "STOP":
                        break
            except ValueError:  # an unknown opcode (the refusal cases)
                pass
    missing = {op.name for op in pickletools.opcodes} - seen
    assert not missing, f"opcodes without a fixture: {sorted(missing)}"


def real_expected(path: str) -> dict[str, Any]:
    with open(path, "rb") as f:
        obj = ref_load(f.read())
    tensors: dict[str, Any] = {}

    def walk(o: Any, where: list[str]) -> None:
        if isinstance(o, RefTensor):
            data = o.materialise()
            tensors["/".join(where)] = {
                "dtype": o.storage.dtype,
                "shape": list(o.shape),
                "storage": o.storage.key,
                "offset": o.offset,
                "stride": list(o.stride),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        elif isinstance(o, dict):
            for k, v in o.items():
                walk(v, where + [str(k)])
        elif isinstance(o, (list, tuple)):
            for i, v in enumerate(o):
                walk(v, where + [str(i)])
        elif isinstance(o, argparse.Namespace):
            walk(vars(o), where)

    walk(obj, [])
    return {
        "file": os.path.basename(path),
        "what": "every tensor of the checkpoint, by path of dict keys joined with '/', "
        "materialised row-major contiguous little-endian; sha256 of those bytes",
        "tensors": tensors,
    }


def compact_json(doc: dict[str, Any]) -> str:
    """JSON with one line per case or tensor (small diffs, readable)."""
    lines = ["{"]
    items = list(doc.items())
    for i, (k, v) in enumerate(items):
        sep = "," if i + 1 < len(items) else ""
        if isinstance(v, list):
            inner = ",\n".join("  " + json.dumps(x, ensure_ascii=False) for x in v)
            lines.append(f" {json.dumps(k)}: [\n{inner}\n ]{sep}")
        elif isinstance(v, dict) and v and all(isinstance(x, dict) for x in v.values()):
            inner = ",\n".join(f"  {json.dumps(n)}: {json.dumps(x, ensure_ascii=False)}" for n, x in v.items())
            lines.append(f" {json.dumps(k)}: {{\n{inner}\n }}{sep}")
        else:
            lines.append(f" {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}{sep}")
    return "\n".join(lines) + "\n}\n"


def main() -> None:
    edge_cases()
    opcode_cases()
    hostile_cases()
    container_cases()
    self_check()
    check_opcode_coverage()
    for kind in ("edge", "opcodes", "hostile", "real_expected"):
        d = os.path.join(OUT_DIR, kind)
        if os.path.isdir(d):
            for fn in os.listdir(d):
                os.remove(os.path.join(d, fn))
        os.makedirs(d, exist_ok=True)
    total = 0
    for fname, data in FILES.items():
        with open(os.path.join(OUT_DIR, fname), "wb") as f:
            f.write(data)
        total += len(data)
    manifest = {
        "generator": "tools/gen_checkpoints.py",
        "expect": {
            "ok": "loads; the tensors equal `tensors` exactly (names, dtype, shape, bytes as hex)",
            "error": "throws the reader's checkpoint error class; `message` (regex) matches when given",
            "ok_or_error": "either loads to exactly `tensors` or throws the checkpoint error class",
        },
        "cases": CASES,
    }
    with open(os.path.join(OUT_DIR, "manifest.json"), "w") as f:
        f.write(compact_json(manifest))
    for name in REAL_FIXTURES:
        exp = real_expected(os.path.join(ROOT, "tests", "fixtures", name))
        out = os.path.join(OUT_DIR, "real_expected", name.rsplit(".", 1)[0] + ".json")
        with open(out, "w") as f:
            f.write(compact_json(exp))
    print(f"{len(CASES)} cases, {total} bytes of checkpoints in {OUT_DIR}")


if __name__ == "__main__":
    main()
