"""Read a PyTorch state_dict saved in the legacy (pre-zip, torch < 1.6) ``torch.save`` format, without torch.

Why: the pretrained EfficientNet-Lite0 weights we use ship only as such a ``.pth`` file, and torch is far too
heavy a dependency for reading 18 MB of float32 arrays once.

Layout of the legacy format (see ``torch.serialization._legacy_load``):

1. pickle: magic number ``0x1950a86a20f9469cfc6c``
2. pickle: protocol version (1001)
3. pickle: sys info (endianness, type sizes)
4. pickle: the object itself; every storage is a persistent id
   ``("storage", storage_type, key, location, numel, view_metadata)``
5. pickle: list of storage keys, in the order their bytes follow
6. for each key: int64 little-endian element count, then the raw little-endian bytes.
"""

from __future__ import annotations

import collections
import pickle
import struct
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001

_STORAGE_DTYPES: dict[str, np.dtype] = {
    "DoubleStorage": np.dtype("<f8"),
    "FloatStorage": np.dtype("<f4"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


class _StorageType:
    """Stand-in for ``torch.FloatStorage`` and friends: only its element dtype matters."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.dtype = _STORAGE_DTYPES[name]


class _Storage:
    """A storage whose bytes are read after the object pickle; tensors refer to it lazily."""

    def __init__(self, dtype: np.dtype, numel: int) -> None:
        self.dtype = dtype
        self.numel = numel
        self.data: np.ndarray | None = None


class _StorageView:
    """Legacy storage view (``view_metadata``): a slice of a root storage."""

    def __init__(self, root: _Storage, offset: int, size: int) -> None:
        self.root = root
        self.offset = offset
        self.size = size


class _LazyTensor:
    """A tensor reference recorded during unpickling and materialised once the storage bytes are read."""

    def __init__(self, storage: _Storage | _StorageView, offset: int, size: tuple[int, ...],
                 stride: tuple[int, ...]) -> None:
        self.storage = storage
        self.offset = offset
        self.size = tuple(int(s) for s in size)
        self.stride = tuple(int(s) for s in stride)

    def materialise(self) -> np.ndarray:
        st = self.storage
        base_offset = 0
        if isinstance(st, _StorageView):
            base_offset = st.offset
            st = st.root
        if st.data is None:
            raise ValueError("tensor refers to a storage whose bytes were not in the file")
        flat = st.data[base_offset:]
        if not self.size:
            return np.array(flat[self.offset], dtype=flat.dtype)
        last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride, strict=True))
        if last >= flat.size:
            raise ValueError(f"tensor of shape {self.size} runs past the end of its storage")
        item = flat.itemsize
        view = np.lib.stride_tricks.as_strided(
            flat[self.offset:], shape=self.size, strides=tuple(s * item for s in self.stride), writeable=False)
        return np.array(view, dtype=flat.dtype.newbyteorder("="))


def _rebuild_tensor(storage: Any, storage_offset: int, size: tuple[int, ...], stride: tuple[int, ...]) -> _LazyTensor:
    return _LazyTensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(storage: Any, storage_offset: int, size: tuple[int, ...], stride: tuple[int, ...],
                       requires_grad: bool = False, backward_hooks: Any = None, metadata: Any = None) -> _LazyTensor:
    return _LazyTensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data: Any, requires_grad: bool = False, backward_hooks: Any = None) -> Any:
    return data


class _Unpickler(pickle.Unpickler):
    """Maps the handful of torch globals a state_dict pickle names onto the stand-ins above; refuses all else."""

    _ALLOWED = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    }

    def __init__(self, file: BinaryIO) -> None:
        super().__init__(file)
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return self._ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: not part of a plain tensor state_dict")

    def persistent_load(self, pid: Any) -> Any:
        if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        storage_type, key, _location, numel, view_metadata = pid[1:]
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"unexpected storage type {storage_type!r}")
        key = str(key)
        root = self.storages.get(key)
        if root is None:
            root = self.storages[key] = _Storage(storage_type.dtype, int(numel))
        if view_metadata is not None:
            _view_key, offset, view_size = view_metadata
            return _StorageView(root, int(offset), int(view_size))
        return root


def _resolve(obj: Any) -> Any:
    if isinstance(obj, _LazyTensor):
        return obj.materialise()
    if isinstance(obj, dict):
        return type(obj)((k, _resolve(v)) for k, v in obj.items())
    if isinstance(obj, list | tuple):
        return type(obj)(_resolve(v) for v in obj)
    return obj


def read_legacy_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Read a legacy-format ``torch.save`` state_dict into {name: numpy array} (same shapes and dtypes as torch).

    Raises ValueError if the file is not a legacy torch.save file or is truncated.
    """
    path = Path(path)
    with path.open("rb") as f:
        try:
            magic = pickle.load(f)
        except Exception as exc:
            raise ValueError(f"{path}: not a legacy torch.save file (no magic-number pickle: {exc})") from None
        if magic != LEGACY_MAGIC:
            if isinstance(magic, int | str | bytes) or magic is None:
                raise ValueError(f"{path}: not a legacy torch.save file (magic {magic!r})")
            raise ValueError(f"{path}: not a legacy torch.save file")
        try:
            protocol = pickle.load(f)
            if protocol != LEGACY_PROTOCOL_VERSION:
                raise ValueError(f"{path}: unsupported torch.save protocol version {protocol!r}")
            sys_info = pickle.load(f)
            if isinstance(sys_info, dict) and not sys_info.get("little_endian", True):
                raise ValueError(f"{path}: big-endian torch files are not supported")
            unpickler = _Unpickler(f)
            obj = unpickler.load()
            keys = pickle.load(f)
        except ValueError:
            raise
        except Exception as exc:
            raise ValueError(f"{path}: malformed legacy torch.save file: {exc}") from exc
        for key in keys:
            storage = unpickler.storages.get(str(key))
            if storage is None:
                raise ValueError(f"{path}: storage {key!r} listed but never referenced")
            header = f.read(8)
            if len(header) != 8:
                raise ValueError(f"{path}: truncated before storage {key!r}")
            (numel,) = struct.unpack("<q", header)
            nbytes = numel * storage.dtype.itemsize
            raw = f.read(nbytes)
            if len(raw) != nbytes:
                raise ValueError(f"{path}: truncated inside storage {key!r} ({len(raw)} of {nbytes} bytes)")
            storage.data = np.frombuffer(raw, dtype=storage.dtype)
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: holds a {type(obj).__name__}, not a state_dict")
    out = _resolve(obj)
    result: dict[str, np.ndarray] = {}
    for name, value in out.items():
        if not isinstance(value, np.ndarray):
            raise ValueError(f"{path}: entry {name!r} is a {type(value).__name__}, not a tensor")
        result[str(name)] = value
    return result
