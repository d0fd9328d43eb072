"""Read a PyTorch state dict saved in the legacy (pre-1.6, non-zip) format into numpy, without torch.

Layout of such a file (``torch.save(..., _use_new_zipfile_serialization=False)``): five
pickles and raw data in one stream —

1. the magic number ``0x1950a86a20f9469cfc6c``, 2. the protocol version (1001), 3. a dict of
system facts (byte order, type sizes), 4. the object itself (here an ``OrderedDict`` of
tensors) whose storages are *persistent ids* ``('storage', StorageType, key, location, numel,
view)`` and whose tensors are rebuilt by ``torch._utils._rebuild_tensor_v2(storage, offset,
size, stride, ...)``, 5. the list of storage keys in the order their data follows, then for
each key an 8-byte little-endian element count and the raw little-endian elements.

Only what a plain state dict of float/int tensors needs is understood; any other class in the
pickle is refused (:class:`TorchFileError`), so an untrusted file cannot run code.
"""

from __future__ import annotations

import collections
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001

#: torch storage class → numpy dtype (little-endian, as torch writes on x86/ARM).
STORAGE_DTYPES = {
    "FloatStorage": np.dtype("<f4"), "DoubleStorage": np.dtype("<f8"), "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"), "IntStorage": np.dtype("<i4"), "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"), "ByteStorage": np.dtype("u1"), "BoolStorage": np.dtype("?"),
}


class TorchFileError(ValueError):
    """The file is not a legacy torch state dict this reader understands (one-line message)."""


@dataclass(frozen=True)
class _StorageType:
    dtype: np.dtype


@dataclass(frozen=True)
class _StorageRef:
    key: str
    dtype: np.dtype
    numel: int


@dataclass(frozen=True)
class _TensorRef:
    storage: _StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, *rest):
    return _TensorRef(storage, int(storage_offset), tuple(int(s) for s in size), tuple(int(s) for s in stride))


class _StateDictUnpickler(pickle.Unpickler):
    """Resolves only the names a state dict uses; everything else is refused."""

    def find_class(self, module: str, name: str):
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor_v2
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(STORAGE_DTYPES[name])
        raise TorchFileError(f"unsupported object {module}.{name} in the pickle")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise TorchFileError(f"unsupported persistent id {pid!r:.80}")
        _, stype, key, _location, numel = pid[:5]
        return _StorageRef(str(key), stype.dtype, int(numel))


def _load_one(fh, what: str):
    try:
        return _StateDictUnpickler(fh).load()
    except TorchFileError:
        raise
    except Exception as exc:  # a truncated or foreign file: one line
        raise TorchFileError(f"cannot read the {what} ({type(exc).__name__}: {exc})") from exc


def read_legacy_state_dict(path: Path | str) -> dict[str, np.ndarray]:
    """``{name: array}`` of a legacy-format torch state dict, in the file's key order.

    Arrays are C-contiguous copies with the tensors' dtypes (float32 weights, int64
    ``num_batches_tracked`` as 0-d arrays). Raises :class:`TorchFileError` naming the file.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            if _load_one(fh, "magic number") != MAGIC_NUMBER:
                raise TorchFileError("not a legacy torch file (magic number differs)")
            if _load_one(fh, "protocol version") != PROTOCOL_VERSION:
                raise TorchFileError("unsupported torch protocol version")
            sys_info = _load_one(fh, "system facts")
            if isinstance(sys_info, dict) and not sys_info.get("little_endian", True):
                raise TorchFileError("big-endian torch files are not supported")
            obj = _load_one(fh, "state dict")
            keys = _load_one(fh, "storage keys")
            refs = {t.storage.key: t.storage for t in obj.values() if isinstance(t, _TensorRef)} if isinstance(obj, dict) else {}
            data = {}
            for key in keys:
                ref = refs.get(str(key))
                (numel,) = struct.unpack("<q", fh.read(8) or b"\0" * 8)
                if ref is None:
                    raise TorchFileError(f"storage {key} is listed but no tensor uses it")
                if numel != ref.numel:
                    raise TorchFileError(f"storage {key}: {numel} elements written, {ref.numel} declared")
                raw = fh.read(numel * ref.dtype.itemsize)
                if len(raw) != numel * ref.dtype.itemsize:
                    raise TorchFileError(f"storage {key} is truncated")
                data[str(key)] = np.frombuffer(raw, dtype=ref.dtype)
    except OSError as exc:
        raise TorchFileError(f"{path.name}: {exc.strerror or exc}") from exc
    except TorchFileError as exc:
        raise TorchFileError(f"{path.name}: {exc}") from exc
    if not isinstance(obj, dict):
        raise TorchFileError(f"{path.name}: the object is a {type(obj).__name__}, not a state dict")
    out = {}
    for name, t in obj.items():
        if not isinstance(t, _TensorRef):
            raise TorchFileError(f"{path.name}: entry {name!r} is not a tensor")
        flat = data[t.storage.key]
        item = flat.dtype.itemsize
        span = 1 + sum((s - 1) * st for s, st in zip(t.size, t.stride, strict=True)) if all(t.size) else 0
        if t.offset + span > flat.size:
            raise TorchFileError(f"{path.name}: tensor {name!r} reaches past its storage")
        view = np.lib.stride_tricks.as_strided(flat[t.offset:], shape=t.size, strides=tuple(s * item for s in t.stride))
        out[str(name)] = np.ascontiguousarray(view)
    return out
