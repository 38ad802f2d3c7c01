"""What a Relax module's main function calls, for tests of hwlat's kernel rewrites."""

from __future__ import annotations

import collections

import tvm
from tvm import relax


def calls(mod: tvm.IRModule) -> collections.Counter:
    """What the main function calls: op names, and `tir:NAME` for call_tir (digits stripped)."""
    c = collections.Counter()
    for block in mod["main"].body.blocks:
        for b in block.bindings:
            v = b.value
            if isinstance(v, relax.Call):
                name = str(getattr(v.op, "name", v.op))
                if name == "relax.call_tir":
                    name = "tir:" + v.args[0].name_hint.rstrip("0123456789")
                c[name] += 1
    return c
