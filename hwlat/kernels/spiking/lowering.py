"""The hwlat.LIFNeuron converter (listed with the spiking-neuron rewrite in
hwlat.kernels.registry).

The converter lowers a node to `call_tir` of the fused kernel for its shape. The kernel is
scheduled for the target in scope at import (`with target:`): a GPU target gets a thread per
neuron, anything else (and no target) the parallel, vectorised CPU kernel.
"""

from __future__ import annotations

import tvm
from tvm import relax

from hwlat.errors import InvalidModelError
from hwlat.kernels.spiking.kernel import neuron_primfunc
from hwlat.kernels.spiking.neuron import NeuronSpec
from hwlat.kernels.spiking.rewrite import DOMAIN, OP_TYPE


def kernel_variant() -> str:
    target = tvm.target.Target.current(allow_none=True)
    return "gpu" if target is not None and "gpu" in target.keys else "cpu"


def convert_lif_neuron(bb, inputs, attrs):
    spec = NeuronSpec.from_attrs(attrs)
    if len(inputs) != 1:
        raise InvalidModelError(f"{DOMAIN}.{OP_TYPE}: takes one input, not {len(inputs)}")
    x = inputs[0]
    ty = x.ty
    dims = _static_dims(ty)
    if ty.dtype != "float32" or not dims or dims[0] != spec.steps:
        raise InvalidModelError(
            f"{DOMAIN}.{OP_TYPE}: needs a float32 input of static shape [T={spec.steps}, ...], "
            f"got {ty.dtype} {dims if dims else 'of unknown shape'}")
    func = neuron_primfunc(spec, tuple(dims[1:]), kernel_variant())
    # one function per neuron shape and form; the module names it (a fixed symbol would clash)
    gv = bb.add_func(func.without_attr("global_symbol"), "hwlat_lif_neuron")
    return relax.call_tir(gv, [x], relax.TensorType(ty.shape, "float32"))


def _static_dims(ty) -> list[int] | None:
    try:
        dims = [getattr(d, "value", None) for d in ty.shape]
    except (AttributeError, TypeError):  # no shape, or a symbolic one
        return None
    return None if any(d is None for d in dims) else [int(d) for d in dims]
