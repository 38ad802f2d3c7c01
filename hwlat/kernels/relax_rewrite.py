"""What hwlat's Relax rewrites share (attention/lowering.py, dense/lowering.py): a base class
that rewrites every Relax function of a module with a list of rules, adding each kernel
PrimFunc once, and the checks their patterns make."""

from __future__ import annotations

from collections.abc import Callable

import tvm
from tvm import relax, s_tir

OPAQUE = 8  # relax OpPatternKind kOpaque: FuseOps leaves the kernel alone


def as_kernel(func: tvm.tirx.PrimFunc) -> tvm.tirx.PrimFunc:
    """A hand-scheduled PrimFunc marked opaque and scheduled (MetaSchedule does not tune it:
    hwlat.lowering.tuning.tunable_tasks), unnamed until it is added to a module."""
    if func.attrs is not None and "global_symbol" in func.attrs:
        func = func.without_attr("global_symbol")
    if len(func.params) == 2 and not isinstance(func.body, s_tir.SBlockRealize):
        # a call_tir with one tensor input is asked whether it is a reshape
        # (RewriteDataflowReshape), which requires the body to be a root block
        root = s_tir.SBlockRealize([], True, s_tir.SBlock([], [], [], "root", func.body))
        func = tvm.tirx.PrimFunc(func.params, root, func.ret_type, func.attrs)
    return func.with_attrs({"op_pattern": OPAQUE, "tirx.is_scheduled": True})


def static_f32_shape(expr: relax.Expr) -> tuple[int, ...] | None:
    """The static shape of a float32 tensor expression, else None."""
    ty = expr.ty
    if not isinstance(ty, relax.TensorType) or ty.dtype != "float32" or ty.shape is None:
        return None
    dims = getattr(ty.shape, "values", None)
    if dims is None or not all(isinstance(d, tvm.tirx.IntImm) for d in dims):
        return None
    return tuple(int(d) for d in dims)


def module_pass(name: str, rewrite: Callable[[tvm.IRModule], tvm.IRModule]) -> tvm.transform.Pass:
    @tvm.transform.module_pass(opt_level=0, name=name)
    def _pass(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        return rewrite(mod)

    return _pass


class KernelRewriter:
    """Subclasses give `rewrite_function` (a function -> the function with its rules applied,
    counting each rewrite in `self.count`) and `make_kernel(spec) -> (PrimFunc, name)`."""

    def __init__(self, mod: tvm.IRModule):
        self.mod = mod
        self.bb = relax.BlockBuilder(mod)
        self.kernels: dict[object, relax.GlobalVar] = {}
        self.count = 0

    def make_kernel(self, spec) -> tuple[tvm.tirx.PrimFunc, str]:
        raise NotImplementedError

    def rewrite_function(self, func: relax.Function) -> relax.Function:
        raise NotImplementedError

    def kernel(self, spec) -> relax.GlobalVar:
        """The module's function for the spec, added on first use."""
        if spec not in self.kernels:
            func, name = self.make_kernel(spec)
            self.kernels[spec] = self.bb.add_func(func, name)
        return self.kernels[spec]

    def run(self) -> tvm.IRModule:
        """The module with every Relax function rewritten (the same module object when nothing
        was)."""
        functions = {}
        for gv, func in self.mod.functions.items():
            if isinstance(func, relax.Function):
                before = self.count
                new = self.rewrite_function(func)
                if self.count > before:
                    functions[gv] = new
        if not functions:
            return self.mod
        out = self.bb.get()
        for gv, func in functions.items():
            out[gv] = func
        return relax.transform.DeadCodeElimination()(out)
