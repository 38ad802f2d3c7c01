"""numpy reference of hwlat's multi-step spiking neuron: the time loop written out per form,
in float32, independently of the kernel's shared step definition (neuron.step)."""

from __future__ import annotations

import numpy as np

from hwlat.kernels.spiking.neuron import NeuronSpec


def neuron_reference(x: np.ndarray, spec: NeuronSpec) -> np.ndarray:
    """Spikes [T, ...] (float32 0/1) for input x [T, ...]."""
    x = np.asarray(x, dtype=np.float32)
    if x.shape[0] != spec.steps:
        raise ValueError(f"input has {x.shape[0]} steps, the neuron {spec.steps}")
    f = np.float32
    tau, thr, vr = f(spec.tau), f(spec.v_threshold), f(spec.v_reset)
    one, zero = f(1.0), f(0.0)
    v = np.full(x.shape[1:], spec.v_init, dtype=np.float32)
    out = np.empty_like(x)
    with np.errstate(invalid="ignore", over="ignore"):  # inf and NaN propagate as IEEE says
        for t in range(spec.steps):
            xt = x[t]
            if spec.charge == "lif":
                h = v + (xt - v) / tau
            elif spec.charge == "lif_reset":
                h = v + (xt - (v - vr)) / tau
            elif spec.charge == "lif_simple":
                h = v + ((vr - v) + xt) / tau
            elif spec.charge == "lif_no_decay_input":
                h = (v - (v - vr) / tau) + xt
            else:
                h = v + xt
            if spec.fire == "ge":
                s = (h >= thr).astype(np.float32)
            elif spec.fire == "gt":
                s = (h > thr).astype(np.float32)
            elif spec.fire == "sub_ge":
                s = ((h - thr) >= zero).astype(np.float32)
            else:
                s = ((h - thr) > zero).astype(np.float32)
            out[t] = s
            v = h * (one - s) + vr * s if spec.reset == "hard" else h - s * thr
    return out
