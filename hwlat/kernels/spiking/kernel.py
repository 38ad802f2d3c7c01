"""The fused multi-step spiking neuron as one TIR PrimFunc: x [T, ...] -> spikes [T, ...] in one
pass, the membrane potential of each neuron held in registers across all T steps.

The element axes are flattened to N neurons. CPU: blocks of `lanes` neurons (64: the membrane
state of a block fills 4 AVX-512 or 8 AVX2 registers) in parallel; per block, v starts at
v_init in a `lanes`-wide local buffer, then for t = 0..T-1 one vectorised statement reads
x[t, block], writes spikes[t, block] and updates v (the N mod lanes neurons left over run the
same loop serially). The unrolled graph makes nine elementwise passes over memory per step,
plus slicing and restacking; this reads x once and writes the spikes once. GPU: one thread
per neuron, v in a register.

Each step is `neuron.step` over TIR expressions, so the arithmetic is the graph's own, in its
float32 order (a division by tau stays a division). Assignments inside the loops are buffer
stores only: a name bound to an expression in TVMScript becomes a one-element local buffer,
which the vectoriser mishandles, so h and s are written inline and LLVM shares them.
"""

from __future__ import annotations

import math
from functools import lru_cache

from tvm import tirx
from tvm.script import tirx as T

from hwlat.errors import InvalidInputError
from hwlat.kernels.spiking.neuron import NeuronSpec, step

LANES = 64  # neurons per vectorised block on CPU
GPU_THREADS = 256


class _TirArith:
    def __init__(self, spec: NeuronSpec):
        self.spec = spec

    def param(self, name: str):
        return T.float32(getattr(self.spec, name))

    def const(self, value: float):
        return T.float32(value)

    def add(self, a, b):
        return a + b

    def sub(self, a, b):
        return a - b

    def mul(self, a, b):
        return a * b

    def div(self, a, b):
        return a / b

    def ge(self, a, b):
        return a >= b

    def gt(self, a, b):
        return a > b

    def to_float(self, c):
        return T.Cast("float32", c)


def neuron_primfunc(spec: NeuronSpec, shape: tuple[int, ...], variant: str = "cpu",
                    lanes: int = LANES) -> tirx.PrimFunc:
    """The kernel for input and spikes of shape [spec.steps, *shape] (float32, static).
    variant: "cpu" (parallel blocks, vectorised) or "gpu" (a thread per neuron)."""
    shape = tuple(int(d) for d in shape)
    if any(d < 1 for d in shape):
        raise InvalidInputError(
            f"spiking neuron: needs a static, non-empty shape, not {list(shape)}")
    if variant not in ("cpu", "gpu"):
        raise InvalidInputError(f"spiking neuron: unknown kernel variant '{variant}' (cpu, gpu)")
    if lanes < 1:
        raise InvalidInputError(f"spiking neuron: lanes must be positive, not {lanes}")
    return _build(spec, shape, variant, lanes)


@lru_cache(maxsize=64)
def _build(spec: NeuronSpec, shape: tuple[int, ...], variant: str, lanes: int) -> tirx.PrimFunc:
    a = _TirArith(spec)

    def spike(v, x):
        return step(spec, a, v, x)[0]

    def next_v(v, x):
        return step(spec, a, v, x)[1]

    if variant == "gpu":
        return _gpu(spec, shape, spike, next_v)
    return _cpu(spec, shape, lanes, spike, next_v)


def _cpu(spec: NeuronSpec, shape, lanes: int, spike, next_v) -> tirx.PrimFunc:
    steps, n = spec.steps, math.prod(shape)
    full = (steps, *shape)
    blocks = n // lanes
    body = blocks * lanes
    rest = n - body
    v_init = T.float32(spec.v_init)

    @T.prim_func(s_tir=True)
    def lif_neuron(x: T.handle, y: T.handle):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        X0 = T.match_buffer(x, full, "float32")
        Y0 = T.match_buffer(y, full, "float32")
        with T.sblock("root"):
            X = T.decl_buffer((steps, n), "float32", data=X0.data)
            Y = T.decl_buffer((steps, n), "float32", data=Y0.data)
            if blocks > 0:
                for b in T.parallel(blocks):
                    v = T.alloc_local((lanes,), "float32")
                    for j in T.vectorized(lanes):
                        v[j] = v_init
                    for t in range(steps):
                        for j in T.vectorized(lanes):
                            Y[t, b * lanes + j] = spike(v[j], X[t, b * lanes + j])
                            v[j] = next_v(v[j], X[t, b * lanes + j])
            if rest > 0:
                w = T.alloc_local((rest,), "float32")
                for j in range(rest):
                    w[j] = v_init
                for t in range(steps):
                    for j in range(rest):
                        Y[t, body + j] = spike(w[j], X[t, body + j])
                        w[j] = next_v(w[j], X[t, body + j])

    return lif_neuron


def _gpu(spec: NeuronSpec, shape, spike, next_v) -> tirx.PrimFunc:
    steps, n = spec.steps, math.prod(shape)
    full = (steps, *shape)
    threads = min(GPU_THREADS, n)
    grid = (n + threads - 1) // threads
    v_init = T.float32(spec.v_init)

    @T.prim_func(s_tir=True)
    def lif_neuron(x: T.handle, y: T.handle):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        X0 = T.match_buffer(x, full, "float32")
        Y0 = T.match_buffer(y, full, "float32")
        with T.sblock("root"):
            X = T.decl_buffer((steps, n), "float32", data=X0.data)
            Y = T.decl_buffer((steps, n), "float32", data=Y0.data)
            for bx in T.thread_binding(grid, thread="blockIdx.x"):
                for tx in T.thread_binding(threads, thread="threadIdx.x"):
                    if bx * threads + tx < n:
                        v = T.alloc_local((1,), "float32")
                        v[0] = v_init
                        for t in range(steps):
                            Y[t, bx * threads + tx] = spike(v[0], X[t, bx * threads + tx])
                            v[0] = next_v(v[0], X[t, bx * threads + tx])

    return lif_neuron
