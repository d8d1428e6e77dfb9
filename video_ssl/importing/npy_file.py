"""Reads a `.npy` file that `np.save` wrote from a Python object (a dict of parameter
trees, as JAX projects release checkpoints) without NumPy's `allow_pickle`.

`np.save(path, {...})` stores a 0-d object array: the `.npy` header, then the array
pickled. `np.load(path, allow_pickle=True)` would run whatever that pickle names; here
the unpickler builds only plain containers, NumPy arrays and scalars, Haiku's mapping
containers (as dicts) and JAX arrays (as NumPy arrays), and inert stand-ins
(`torch_file.Opaque`) for any other class, so a file from an untrusted source can be
inspected safely, and neither JAX nor Haiku is needed to read it.
"""
from __future__ import annotations

import collections
import io
import pickle
from typing import Mapping

import numpy as np

from video_ssl.importing.torch_file import Opaque

# The functions NumPy's own pickles call, from this NumPy (`numpy.core` before 2.0,
# `numpy._core` since: files name either).
_RECONSTRUCT = np.zeros(1).__reduce__()[0]
_SCALAR = np.float32(0).__reduce__()[0]


_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0,
                   (2, 0): np.lib.format.read_array_header_2_0}


class NpyFileError(ValueError):
    """The file is not a `.npy` file, or its pickled object is truncated or corrupt."""


def _mapping(data=None, *unused):
    """Haiku's FlatMapping / FlatMap / frozendict pickle as `cls(mapping)`; a dict here."""
    if not isinstance(data, Mapping):
        raise NpyFileError(f"a Haiku mapping container pickled from {type(data).__name__}, "
                           "expected a mapping")
    return dict(data)


def _jax_array(fun, args, array_state, *unused):
    """A JAX array pickles as its NumPy value's reduction plus JAX state (ignored)."""
    if fun is not _RECONSTRUCT:
        raise NpyFileError("a JAX array pickled without NumPy's array reconstruction")
    array = fun(*args)
    array.__setstate__(array_state)
    return array


_FUNCTIONS = {
    **{(module, name): value for module in ("numpy.core.multiarray", "numpy._core.multiarray")
       for name, value in (("_reconstruct", _RECONSTRUCT), ("scalar", _SCALAR))},
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("collections", "OrderedDict"): collections.OrderedDict,
    **{("haiku._src.data_structures", name): _mapping
       for name in ("FlatMapping", "FlatMap", "frozendict")},
    ("jax._src.array", "_reconstruct_array"): _jax_array,
    ("jax._src.device_array", "reconstruct_device_array"): _jax_array,
}


class _Unpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _FUNCTIONS:
            return _FUNCTIONS[(module, name)]
        return type(name, (Opaque,), {"__module__": module})


def load(path: str):
    """The object `np.save` wrote to `path` (a 0-d object array comes back as its item;
    an array of numbers as itself). Raises NpyFileError naming the path for a file
    that is not a `.npy` file or whose pickle does not read."""
    with open(path, "rb") as f:
        data = f.read()
    stream = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(stream)
        read_header = _HEADER_READERS.get(version)
        if read_header is None:
            raise ValueError(f"format version {version} (np.save of an object writes 1.0)")
        shape, _, dtype = read_header(stream)
    except (ValueError, SyntaxError, TypeError, EOFError) as error:
        raise NpyFileError(f"{path}: not a .npy file (expected the NumPy format np.save "
                           f"writes; {str(error)[:80]})") from None
    try:
        if not dtype.hasobject:
            return np.lib.format.read_array(io.BytesIO(data), allow_pickle=False)
        array = _Unpickler(stream).load()
    except NpyFileError as error:
        raise NpyFileError(f"{path}: {error}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError,
            AttributeError, IndexError) as error:
        raise NpyFileError(f"{path}: corrupt or truncated .npy file "
                           f"({type(error).__name__}: {str(error)[:120]})") from None
    if not isinstance(array, np.ndarray) or array.shape != tuple(shape):
        raise NpyFileError(f"{path}: its pickle holds {type(array).__name__}, expected the "
                           f"object array of shape {tuple(shape)} its header announces")
    return array.item() if array.shape == () else array
