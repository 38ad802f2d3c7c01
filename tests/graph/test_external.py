"""External tensor data is read from regular files only, and only as far as the tensor's dims
need: a missing `length` never means "to the end of the file"."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, external_data_helper

from hwlat.errors import InvalidModelError
from hwlat.graph import load
from tests.helpers.onnx_builders import const, model, node, rand, tensor

REPO = Path(__file__).resolve().parents[2]


def with_external_weight(tmp_path, *, length: int | None = None, offset: int = 0) -> Path:
    m = model([node("Add", ["x", "w"], ["y"])], [tensor("x", [4])], [tensor("y", [4])], [const("w", rand(4))])
    w = m.graph.initializer[0]
    external_data_helper.set_external_data(w, location="w.bin", offset=offset or None, length=length)
    w.data_location = TensorProto.EXTERNAL
    w.ClearField("raw_data")
    d = tmp_path / "models"
    d.mkdir()
    p = d / "m.onnx"
    p.write_bytes(m.SerializeToString())
    return p


def test_no_length_reads_only_what_the_dims_need(tmp_path):
    p = with_external_weight(tmp_path)
    big = p.parent / "w.bin"
    with open(big, "wb") as f:
        f.write(np.arange(4, dtype=np.float32).tobytes())
        f.truncate(1 << 30)  # 1 GiB, sparse: reading it all would show in the peak RSS
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    g = load(p)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    np.testing.assert_array_equal(g.values["w"].data, np.arange(4, dtype=np.float32))
    assert grown_mib < 256


def test_a_length_that_disagrees_with_the_dims_is_refused(tmp_path):
    p = with_external_weight(tmp_path, length=1 << 20)
    (p.parent / "w.bin").write_bytes(b"\0" * (1 << 20))
    with pytest.raises(InvalidModelError, match="need 16"):
        load(p)


def test_data_past_the_end_of_the_file_is_refused(tmp_path):
    p = with_external_weight(tmp_path, offset=8)
    (p.parent / "w.bin").write_bytes(b"\0" * 16)
    with pytest.raises(InvalidModelError, match="past the end"):
        load(p)


@pytest.mark.parametrize("kind", ["fifo", "dev_zero_link", "folder"])
def test_only_regular_files_are_read(tmp_path, kind):
    p = with_external_weight(tmp_path)
    target = p.parent / "w.bin"
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "dev_zero_link":
        os.symlink("/dev/zero", target)
    else:
        target.mkdir()
    # in a child process with a timeout, so that a reader that blocks fails the test, not hangs it
    code = ("import sys\nfrom hwlat.graph import load\nfrom hwlat.errors import InvalidModelError\n"
            "try:\n    load(sys.argv[1])\nexcept InvalidModelError as e:\n    print(e)\n")
    r = subprocess.run([sys.executable, "-c", code, str(p)], capture_output=True, text=True,
                       timeout=60, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert r.returncode == 0 and "is not a regular file" in r.stdout, (r.stdout, r.stderr)
