"""External tensor data, read only as far as the declared shape needs.

`onnx.load` reads an external-data tensor without a `length` to the end of its file, and opens
whatever the location names. hwlat first checks each location in the model folder is a regular
file (not a FIFO, device or symlink), fixes each tensor's length to what its dims and element
type need (a `length` that says otherwise is refused), then lets onnx read it: onnx still refuses
locations that leave the model folder, symlinks and hardlinks, and reads no further than that
length.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
from onnx import ModelProto, TensorProto, external_data_helper, helper

from hwlat.errors import InvalidModelError


def load_external_data(model: ModelProto, folder: Path) -> None:
    """Fill in every external-data tensor of `model` from files in `folder`, bounded by the
    tensors' declared sizes; InvalidModelError for anything else."""
    tensors = [t for t in external_data_helper._get_all_tensors(model)
               if external_data_helper.uses_external_data(t)]
    for t in tensors:
        info = external_data_helper.ExternalDataInfo(t)
        where = f"external data of '{t.name}'"
        if not info.location:
            raise InvalidModelError(f"{where} names no file")
        need = _nbytes(t)
        if need is None:
            raise InvalidModelError(f"{where}: element type {t.data_type} cannot be stored externally")
        if info.length is not None and info.length != need:
            raise InvalidModelError(f"{where}: length {info.length} bytes, but its dims "
                                    f"{list(t.dims)} need {need}")
        try:
            st = os.lstat(folder / info.location)
        except (OSError, ValueError) as e:
            raise InvalidModelError(f"{where}: cannot read {info.location!r} "
                                    f"({getattr(e, 'strerror', None) or e})") from e
        if not stat.S_ISREG(st.st_mode):
            raise InvalidModelError(f"{where}: {info.location!r} is not a regular file")
        offset = info.offset or 0
        if offset < 0 or offset + need > st.st_size:
            raise InvalidModelError(f"{where}: {need} bytes from offset {offset} lie past the end "
                                    f"of {info.location!r} ({st.st_size} bytes)")
        _set_length(t, need)
    if tensors:
        external_data_helper.load_external_data_for_model(model, str(folder))


def _set_length(t: TensorProto, length: int) -> None:
    for entry in t.external_data:
        if entry.key == "length":
            entry.value = str(length)
            return
    entry = t.external_data.add()
    entry.key, entry.value = "length", str(length)


def _nbytes(t: TensorProto) -> int | None:
    try:
        itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize
    except Exception:
        return None
    if t.data_type == TensorProto.STRING or any(d < 0 for d in t.dims):
        return None
    n = 1
    for d in t.dims:
        n *= int(d)
    return n * itemsize
