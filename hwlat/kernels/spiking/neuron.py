"""The multi-step spiking neuron hwlat fuses, defined once.

A neuron layer keeps a membrane potential v per element, starts it at `v_init` and, for each of
T time steps, charges it with that step's input x, fires a spike (1.0 or 0.0) and resets it:

    h = charge(v, x)        lif:                v + (x - v) / tau
                            lif_reset:          v + (x - (v - v_reset)) / tau
                            lif_simple:         v + ((v_reset - v) + x) / tau
                            lif_no_decay_input: (v - (v - v_reset) / tau) + x
                            if:                 v + x            (integrate-and-fire: no leak)
    s = fire(h)             ge: h >= v_threshold     gt: h > v_threshold
                            sub_ge: h - v_threshold >= 0     sub_gt: h - v_threshold > 0
    v = reset(h, s)         hard: h * (1 - s) + v_reset * s
                            soft: h - s * v_threshold

These are the forms PyTorch exports of LIF/IF neurons take (hwlat's zoo: lif + ge + hard;
SpikingJelly: lif / lif_reset / lif_no_decay_input / if, ge or sub_ge, hard or soft). `step`
writes one time step over an abstract arithmetic (`Arith`), in the graph's float32 operation
order: the TIR kernel, and the symbolic pattern the ONNX rewrite matches the unrolled graph
against, are both built from it, so the kernel computes what the graph it replaces computes.

Every multiplication in these forms has a spike (0 or 1) or 1 - spike as a factor, so its
product is exact and a fused multiply-add rounds it as the separate operations do. That is why
SpikingJelly's `v * (1 - 1 / tau) + x` (decay_input=False, v_reset 0) is not a form here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Protocol

from hwlat.errors import InvalidInputError

CHARGES = ("lif", "lif_reset", "lif_simple", "lif_no_decay_input", "if")
FIRES = ("ge", "gt", "sub_ge", "sub_gt")
RESETS = ("hard", "soft")
PARAMS = ("tau", "v_threshold", "v_reset")


@dataclass(frozen=True)
class NeuronSpec:
    """One neuron layer over `steps` time steps; the constants are float32 values."""

    steps: int
    charge: str = "lif"
    fire: str = "ge"
    reset: str = "hard"
    tau: float = 2.0
    v_threshold: float = 1.0
    v_reset: float = 0.0
    v_init: float = 0.0

    def __post_init__(self) -> None:
        problems = []
        if not isinstance(self.steps, int) or self.steps < 1:
            problems.append(f"steps must be a positive integer, not {self.steps!r}")
        for name, value, known in (("charge", self.charge, CHARGES), ("fire", self.fire, FIRES),
                                   ("reset", self.reset, RESETS)):
            if value not in known:
                problems.append(f"{name} '{value}' is not one of {', '.join(known)}")
        if self.charge != "if" and self.tau == 0.0:
            problems.append("tau must not be 0")
        if problems:
            raise InvalidInputError(f"spiking neuron: {'; '.join(problems)}")

    def attrs(self) -> dict[str, Any]:
        """The ONNX attributes of an hwlat.LIFNeuron node (T is the step count)."""
        d = asdict(self)
        d["T"] = d.pop("steps")
        return d

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> NeuronSpec:
        names = {"T", "charge", "fire", "reset", "tau", "v_threshold", "v_reset", "v_init"}
        unknown = sorted(set(attrs) - names)
        if unknown or "T" not in attrs:
            raise InvalidInputError(f"hwlat.LIFNeuron: needs attribute T; unknown attributes: "
                                    f"{', '.join(unknown) or 'none'}")
        d = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in attrs.items()}
        d["steps"] = int(d.pop("T"))
        for k in ("tau", "v_threshold", "v_reset", "v_init"):
            if k in d:
                d[k] = float(d[k])
        return cls(**d)


class Arith(Protocol):
    """What `step` computes with: float32 values of some kind (numbers, TIR, symbols)."""

    def param(self, name: str) -> Any: ...  # one of PARAMS
    def const(self, value: float) -> Any: ...  # 0.0 or 1.0
    def add(self, a: Any, b: Any) -> Any: ...
    def sub(self, a: Any, b: Any) -> Any: ...
    def mul(self, a: Any, b: Any) -> Any: ...
    def div(self, a: Any, b: Any) -> Any: ...
    def ge(self, a: Any, b: Any) -> Any: ...
    def gt(self, a: Any, b: Any) -> Any: ...
    def to_float(self, c: Any) -> Any: ...  # a comparison's truth as 1.0 / 0.0


def charge(spec: NeuronSpec, a: Arith, v: Any, x: Any) -> Any:
    c = spec.charge
    if c == "lif":
        return a.add(v, a.div(a.sub(x, v), a.param("tau")))
    if c == "lif_reset":
        return a.add(v, a.div(a.sub(x, a.sub(v, a.param("v_reset"))), a.param("tau")))
    if c == "lif_simple":
        return a.add(v, a.div(a.add(a.sub(a.param("v_reset"), v), x), a.param("tau")))
    if c == "lif_no_decay_input":
        return a.add(a.sub(v, a.div(a.sub(v, a.param("v_reset")), a.param("tau"))), x)
    return a.add(v, x)  # if


def fire(spec: NeuronSpec, a: Arith, h: Any) -> Any:
    f = spec.fire
    cmp = a.ge if f in ("ge", "sub_ge") else a.gt
    if f.startswith("sub_"):
        return a.to_float(cmp(a.sub(h, a.param("v_threshold")), a.const(0.0)))
    return a.to_float(cmp(h, a.param("v_threshold")))


def reset(spec: NeuronSpec, a: Arith, h: Any, s: Any) -> Any:
    if spec.reset == "hard":
        return a.add(a.mul(h, a.sub(a.const(1.0), s)), a.mul(a.param("v_reset"), s))
    return a.sub(h, a.mul(s, a.param("v_threshold")))


def step(spec: NeuronSpec, a: Arith, v: Any, x: Any) -> tuple[Any, Any]:
    """One time step: (spike, next membrane potential)."""
    h = charge(spec, a, v, x)
    s = fire(spec, a, h)
    return s, reset(spec, a, h, s)
