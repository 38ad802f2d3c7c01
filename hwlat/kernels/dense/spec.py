"""What a dense kernel computes: the shapes of a conv2d (NCHW/OIHW) or a matmul with a constant
weight, and the epilogue fused into it.

    y = activation(op(x, w) + bias + residual)

bias is per output channel (conv: shape (cout,), added at [:, c, :, :]; matmul: shape (n,), added
along the last axis); residual has the output's shape; activation is "none", "relu", "clip"
(min(max(v, clip_min), clip_max)), "hardswish" (v * clip(v + 3, 0, 6) / 6), "gelu"
(v/2 (1 + erf(v / sqrt 2))), "gelu_tanh" (v/2 (1 + tanh(sqrt(2/pi) (v + 0.044715 v^3)))),
"sigmoid" (1 / (1 + exp(-v))) or "silu" (v * sigmoid(v), also called swish); activation.py
builds them. Every tensor is float32 with a static shape.

Beyond that single activation, an epilogue may hold a short chain of elementwise steps (`STEPS`):
``pre`` runs between the bias and the residual (only with a residual: an activation before the
residual add), ``post`` after the activation. A step is a tuple ``(name, *params)``: an
activation name without parameters (("relu",), ("silu",), ...), ("clip", lo, hi), or a constant
scalar ("mul", c) / ("add", c). So the full epilogue is

    y = post(activation(pre(op(x, w) + bias) + residual))

and, for example, HardSigmoid after a conv (clip(v * alpha + beta, 0, 1)) is
``post=(("mul", alpha), ("add", beta), ("clip", 0.0, 1.0))``.

Each kernel module (conv.py: groups == 1, depthwise.py: groups == cin == cout, grouped.py: the
other groups > 1, matmul.py) has

- ``supports(spec) -> str | None``: None when it takes the spec, else the reason;
- ``packed_weight_shape(spec)`` and ``pack_weight(spec, w) -> np.ndarray``: the weight in the
  layout the kernel reads (float32, C-contiguous), from OIHW (conv) or (k, n) (matmul); the
  rewrite packs constant weights once, at compile time;
- ``primfunc(spec) -> tvm.tirx.PrimFunc`` with parameters, in order: x, packed weight, bias (when
  ``epilogue.bias``), residual (when ``epilogue.residual``), the prologue's (2, cin) scale and
  shift (when a conv spec's ``prologue``), y. It is scheduled by hand
  (``tirx.is_scheduled``), parallel over independent output blocks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ACTIVATIONS = ("none", "relu", "clip", "hardswish", "gelu", "gelu_tanh", "sigmoid", "silu")
# the steps of `Epilogue.pre` / `post` and the number of float parameters each takes
STEPS = {"relu": 0, "hardswish": 0, "gelu": 0, "gelu_tanh": 0, "sigmoid": 0, "silu": 0,
         "clip": 2, "mul": 1, "add": 1}
MAX_STEPS = 8  # pre and post together: a longer chain stays in separate ops


def _step_reason(step) -> str | None:
    if not isinstance(step, tuple) or not step or step[0] not in STEPS:
        return f"a step must be a tuple (name, *params) with name one of {tuple(STEPS)}, got {step!r}"
    if len(step) != 1 + STEPS[step[0]]:
        return f"step {step[0]!r} takes {STEPS[step[0]]} parameters, got {step!r}"
    if not all(isinstance(p, float) and p == p for p in step[1:]):
        return f"the parameters of step {step!r} must be floats (not NaN)"
    return None


@dataclass(frozen=True)
class Epilogue:
    bias: bool = True
    residual: bool = False
    activation: str = "none"
    clip_min: float = 0.0
    clip_max: float = 6.0
    pre: tuple[tuple, ...] = ()  # steps between the bias and the residual (needs a residual)
    post: tuple[tuple, ...] = ()  # steps after the activation

    def __post_init__(self):
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if not isinstance(self.pre, tuple) or not isinstance(self.post, tuple):
            raise ValueError("pre and post must be tuples of steps")
        for step in (*self.pre, *self.post):
            reason = _step_reason(step)
            if reason is not None:
                raise ValueError(reason)
        if self.pre and not self.residual:
            raise ValueError("pre steps need a residual (without one they are post steps)")
        if len(self.pre) + len(self.post) > MAX_STEPS:
            raise ValueError(f"more than {MAX_STEPS} pre and post steps")

    @property
    def steps(self) -> tuple[tuple, ...]:
        """Everything after the residual add, in order: the activation (as a step) and post."""
        if self.activation == "none":
            act = ()
        elif self.activation == "clip":
            act = (("clip", float(self.clip_min), float(self.clip_max)),)
        else:
            act = ((self.activation,),)
        return act + self.post


@dataclass(frozen=True)
class Conv2dSpec:
    batch: int
    cin: int
    height: int
    width: int
    cout: int
    kernel: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, left, bottom, right
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    epilogue: Epilogue = field(default_factory=Epilogue)
    # the input as the conv reads it is relu(x * scale[c] + shift[c]) (a batch norm and relu
    # before the conv, which cannot fold into its weight); the kernel then takes one more
    # parameter, (2, cin): scale, shift (conv.py: 1x1 stride-1 unpadded convs only)
    prologue: bool = False

    @property
    def out_height(self) -> int:
        kh = (self.kernel[0] - 1) * self.dilation[0] + 1
        return (self.height + self.padding[0] + self.padding[2] - kh) // self.stride[0] + 1

    @property
    def out_width(self) -> int:
        kw = (self.kernel[1] - 1) * self.dilation[1] + 1
        return (self.width + self.padding[1] + self.padding[3] - kw) // self.stride[1] + 1

    @property
    def x_shape(self) -> tuple[int, int, int, int]:
        return (self.batch, self.cin, self.height, self.width)

    @property
    def w_shape(self) -> tuple[int, int, int, int]:  # OIHW
        return (self.cout, self.cin // self.groups, *self.kernel)

    @property
    def y_shape(self) -> tuple[int, int, int, int]:
        return (self.batch, self.cout, self.out_height, self.out_width)

    @property
    def depthwise(self) -> bool:
        return self.groups > 1 and self.groups == self.cin == self.cout


@dataclass(frozen=True)
class MatmulSpec:
    """y[m, n] = x[m, k] @ w[k, n] (leading axes of a batched x are flattened into m)."""

    m: int
    k: int
    n: int
    epilogue: Epilogue = field(default_factory=Epilogue)

    @property
    def x_shape(self) -> tuple[int, int]:
        return (self.m, self.k)

    @property
    def w_shape(self) -> tuple[int, int]:
        return (self.k, self.n)

    @property
    def y_shape(self) -> tuple[int, int]:
        return (self.m, self.n)
