"""Reads a file written by `torch.save` (`.pyth`, `.pth`, `.pth.tar`) without PyTorch.

Both formats `torch.save` has written since PyTorch 0.4 are read: the zip archive
(PyTorch >= 1.6: `<name>/data.pkl` plus one `<name>/data/<key>` file of raw bytes per
storage) and the legacy stream (magic number, protocol, system info, the pickle, the
storage keys, then each storage as an int64 element count and its bytes). Tensors and
parameters come back as NumPy arrays; containers as dicts and lists.

Nothing in the file is executed: the unpickler builds only plain containers, NumPy
arrays and inert stand-ins (`Opaque`) for any other class the pickle names (an
argparse Namespace, a config node, an optimizer's objects), so a file from an
untrusted source can be inspected safely.
"""
from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile

import numpy as np

LEGACY_MAGIC = 0x1950a86a20f9469cfc6c

# torch.<Name>Storage -> (NumPy dtype, bytes per element); bfloat16 is widened below.
_STORAGES = {
    "FloatStorage": ("<f4", 4), "DoubleStorage": ("<f8", 8), "HalfStorage": ("<f2", 2),
    "BFloat16Storage": ("<u2", 2), "LongStorage": ("<i8", 8), "IntStorage": ("<i4", 4),
    "ShortStorage": ("<i2", 2), "CharStorage": ("i1", 1), "ByteStorage": ("u1", 1),
    "BoolStorage": ("?", 1),
}


class TorchFileError(ValueError):
    """The file is not one `torch.save` wrote, or is truncated or corrupt."""


class Opaque:
    """Stands in for an object of a class the reader does not build (kept inert)."""
    args: tuple = ()
    kwargs: dict = {}
    state = None

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs, self.state = args, kwargs, None

    def __setstate__(self, state):
        self.state = state

    def __repr__(self):
        return f"Opaque{self.args!r}"


def _opaque_class(module: str, name: str) -> type:
    return type(name, (Opaque,), {"__module__": module})


class _Storage:
    """A storage named by the pickle; its bytes are attached after unpickling (legacy)
    or read from the archive (zip)."""

    def __init__(self, kind: str, numel: int):
        if kind not in _STORAGES:
            raise TorchFileError(f"storage type {kind!r} is not supported; expected one "
                                 f"of {sorted(_STORAGES)}")
        self.kind, self.numel, self.array = kind, numel, None

    def attach(self, data: bytes, what: str) -> None:
        dtype, size = _STORAGES[self.kind]
        if len(data) != self.numel * size:
            raise TorchFileError(f"{what}: {len(data)} bytes, expected {self.numel} "
                                 f"{self.kind} elements ({self.numel * size} bytes)")
        array = np.frombuffer(data, dtype=dtype)
        if self.kind == "BFloat16Storage":
            array = (array.astype(np.uint32) << 16).view(np.float32)
        self.array = array


class _Tensor:
    """A tensor view of a storage; made into an array once the storage is filled."""

    def __init__(self, storage: _Storage, offset: int, size, stride):
        self.storage, self.offset = storage, offset
        self.size, self.stride = tuple(size), tuple(stride)

    def to_numpy(self) -> np.ndarray:
        base = self.storage.array
        if not self.size:
            return base[self.offset].copy()
        extent = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride)) + 1
        if min(self.size) > 0 and extent > base.size:
            raise TorchFileError(f"a tensor of shape {self.size} reaches element {extent} "
                                 f"of a storage of {base.size}")
        item = base.itemsize
        return np.lib.stride_tricks.as_strided(
            base[self.offset:], shape=self.size,
            strides=tuple(s * item for s in self.stride)).copy()


def _rebuild_tensor(storage, offset, size, stride, *unused):
    return _Tensor(storage, offset, size, stride)


def _rebuild_parameter(data, *unused):
    return data


def _rebuild_tensor_v3(storage, offset, size, stride, requires_grad, hooks, dtype, *unused):
    return _Tensor(storage, offset, size, stride)


_TORCH_FUNCTIONS = {
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set, ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice, ("builtins", "complex"): complex,
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, stream, storage_for):
        super().__init__(stream)
        self._storage_for = storage_for

    def find_class(self, module, name):
        if (module, name) in _TORCH_FUNCTIONS:
            return _TORCH_FUNCTIONS[(module, name)]
        if module == "torch" and name in _STORAGES:
            return name  # the storage's kind, as the persistent id names it
        return _opaque_class(module, name)

    def persistent_load(self, saved_id):
        if not isinstance(saved_id, tuple) or not saved_id or saved_id[0] != "storage":
            raise TorchFileError(f"unexpected persistent id {saved_id!r:.80}")
        kind, key, _, numel = saved_id[1:5]
        if not isinstance(kind, str):  # torch.storage.UntypedStorage and the like
            raise TorchFileError(f"storage class {kind!r} is not supported")
        return self._storage_for(str(key), kind, int(numel))


def _arrays(value):
    """The unpickled object with every tensor turned into an array."""
    if isinstance(value, _Tensor):
        return value.to_numpy()
    if isinstance(value, dict):
        return type(value)((k, _arrays(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return type(value)(_arrays(v) for v in value)
    return value


def _read_zip(path: str, archive: zipfile.ZipFile):
    pickles = [n for n in archive.namelist() if n.endswith("data.pkl")]
    if len(pickles) != 1:
        raise TorchFileError(f"{path}: a zip archive, but not one torch.save wrote "
                             "(expected exactly one <name>/data.pkl)")
    prefix = pickles[0][:-len("data.pkl")]
    byteorder = prefix + "byteorder"
    if byteorder in archive.namelist() and archive.read(byteorder).strip() != b"little":
        raise TorchFileError(f"{path}: big-endian tensors are not supported")
    storages: dict[str, _Storage] = {}

    def storage_for(key, kind, numel):
        if key not in storages:
            storage = storages[key] = _Storage(kind, numel)
            name = f"{prefix}data/{key}"
            try:
                storage.attach(archive.read(name), f"{path}:{name}")
            except KeyError:
                raise TorchFileError(f"{path}: storage {name} is missing from the "
                                     "archive") from None
        return storages[key]

    with archive.open(pickles[0]) as f:
        return _Unpickler(f, storage_for).load()


def _read_legacy(path: str, f):
    try:
        magic = pickle.load(f)
    except Exception:  # noqa: BLE001 - anything unreadable is "not a torch file"
        magic = None
    if magic != LEGACY_MAGIC:
        raise TorchFileError(f"{path}: not a file torch.save wrote (neither its zip "
                             "archive nor its legacy format)")
    pickle.load(f)  # protocol version
    pickle.load(f)  # system info (byte order, sizes)
    storages: dict[str, _Storage] = {}

    def storage_for(key, kind, numel):
        return storages.setdefault(key, _Storage(kind, numel))

    result = _Unpickler(f, storage_for).load()
    for key in pickle.load(f):
        storage = storages[str(key)]
        header = f.read(8)
        if len(header) != 8:
            raise TorchFileError(f"{path}: truncated before storage {key}")
        (numel,) = struct.unpack("<q", header)
        size = _STORAGES[storage.kind][1]
        storage.attach(f.read(numel * size), f"{path}: storage {key}")
    return result


def load(path: str):
    """The object `torch.save` wrote to `path`, tensors as NumPy arrays.

    Raises TorchFileError naming the path for a file that is not a `torch.save`
    file, is truncated, or holds tensors this reader does not support.
    """
    with open(path, "rb") as f:
        data = f.read()
    if not data:
        raise TorchFileError(f"{path}: empty file (expected a file torch.save wrote)")
    try:
        if data[:2] == b"PK":  # a zip archive, possibly truncated
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                result = _read_zip(path, archive)
        else:
            result = _read_legacy(path, io.BytesIO(data))
        return _arrays(result)
    except TorchFileError:
        raise
    except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, struct.error,
            ValueError, TypeError, KeyError, AttributeError, IndexError) as error:
        raise TorchFileError(f"{path}: corrupt or truncated torch.save file "
                             f"({type(error).__name__}: {str(error)[:120]})") from None
