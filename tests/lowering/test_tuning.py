"""The candidate builder that MetaSchedule's worker processes run (tuning itself takes minutes
here and is not run by the tests)."""

from __future__ import annotations

import sys

import numpy as np
import tvm
from tvm.script import ir as I
from tvm.script import tirx as T

from hwlat.lowering.targets import make_target
from hwlat.lowering.tuning import build_candidate


@I.ir_module
class AddOne:
    @T.prim_func(s_tir=True)
    def main(a: T.Buffer((8,), "float32"), b: T.Buffer((8,), "float32")):
        for i in range(8):
            with T.sblock("b"):
                vi = T.axis.spatial(8, i)
                b[vi] = a[vi] + T.float32(1)


def test_candidate_builds_without_registering_every_tensor_intrinsic():
    had_intrinsics = "tvm.s_tir.tensor_intrin" in sys.modules
    lib = build_candidate(AddOne, make_target("host"), None)
    assert had_intrinsics or "tvm.s_tir.tensor_intrin" not in sys.modules
    a = tvm.runtime.tensor(np.arange(8, dtype="float32"))
    b = tvm.runtime.tensor(np.zeros(8, dtype="float32"))
    lib["main"](a, b)
    np.testing.assert_array_equal(b.numpy(), np.arange(8, dtype="float32") + 1)
