"""The fast path (torch module -> graph IR, no ONNX) against the export route: the same kernel
keys, model by model; what it cannot map exactly goes the export route, and says why."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hwlat import fastpath, zoo
from hwlat.api import to_graph
from hwlat.errors import InvalidInputError
from hwlat.graph import fuse
from tests.helpers.torch_modules import Rolls

# the shared data folder beside the checkout; the test skips without it
OFA_DATA = (Path(__file__).resolve().parents[3] / "shared" / "data" / "ofa" / "net_configs"
            / "note10_lat-8ms_top1-71.4_finetune-25.json")


def keys(g) -> Counter:
    return Counter(k.key.text() for k in fuse(g))


def both_routes(model, inputs) -> tuple[Counter, Counter]:
    fast = to_graph(model, inputs=inputs, route="fast")
    assert fast.route == "fast"
    exported = to_graph(model, inputs=inputs, route="export")
    assert exported.route == "export"
    return keys(fast.graph), keys(exported.graph)


class ManyOps(nn.Module):
    """Most of what the fast path maps, with the value facts the exporter acts on: a fresh
    BatchNorm (folds to a zero bias, which the exporter drops), a conv bias of zeros, a Linear
    without bias on 2-D input, a zero-bias Linear on 3-D input (kept), a BatchNorm alone."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.SiLU())
        self.c2 = nn.Conv2d(16, 16, 3, 1, 1)
        nn.init.zeros_(self.c2.bias)
        self.c3 = nn.Conv2d(16, 16, 1)
        self.bn = nn.BatchNorm2d(16)
        self.bn.running_mean.uniform_()
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.avg = nn.AvgPool2d(2)
        self.ln = nn.LayerNorm(16)
        self.fc1 = nn.Linear(16, 32)
        nn.init.zeros_(self.fc1.bias)
        self.act = nn.GELU(approximate="tanh")
        self.head = nn.Linear(64, 10, bias=False)
        self.gap = nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        y = self.stem(x)
        z = F.relu6(self.c2(y)) + F.hardswish(self.c3(y))
        z = self.bn(z * torch.sigmoid(z))
        z = F.hardsigmoid(z) * z
        p = torch.cat([self.pool(z), self.avg(z)], dim=1)            # [1, 32, 4, 4]
        t = z.flatten(2).transpose(1, 2)                              # [1, 64, 16]
        t = self.act(self.fc1(self.ln(t))).softmax(dim=-1)            # [1, 64, 32]
        v = torch.cat([self.gap(p).flatten(1), t.mean(1)], dim=1)     # [1, 64]
        return self.head(F.relu(v))


def test_many_ops_give_the_export_routes_keys():
    torch.manual_seed(0)
    fast, exported = both_routes(ManyOps().eval(), (torch.randn(1, 3, 16, 16),))
    assert fast == exported
    texts = "\n".join(fast)
    assert "BatchNormalization" in texts  # the BN after an Add stays a node of its own
    assert "conv|Conv+Sigmoid+Mul|in:float32[1x3x16x16]|out:float32[1x16x8x8]|w:float32[16x3x3x3]|" in texts


def test_conv1d_gives_the_export_routes_keys():
    torch.manual_seed(0)
    zero_bias = nn.Conv1d(8, 6, 1)
    nn.init.zeros_(zero_bias.bias)
    model = nn.Sequential(nn.Conv1d(4, 8, 3, 2, 1), nn.ReLU(),
                          nn.Conv1d(8, 8, 5, 1, 4, dilation=2, groups=8, bias=False),
                          zero_bias, nn.Conv1d(6, 6, 3)).eval()
    fast, exported = both_routes(model, (torch.randn(2, 4, 32),))
    assert fast == exported
    assert any("kernel_shape=5," in k and "dilations=2," in k and "group=8," in k for k in fast)


def test_group_norm_gives_the_export_routes_keys():
    torch.manual_seed(0)
    trained = nn.GroupNorm(4, 8)
    with torch.no_grad():
        trained.weight.uniform_()
        trained.bias.uniform_()
    model = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1), trained, nn.ReLU(),
                          nn.GroupNorm(8, 8, affine=False), nn.Conv2d(8, 8, 1),
                          nn.GroupNorm(2, 8)).eval()
    fast, exported = both_routes(model, (torch.randn(2, 3, 16, 16),))
    assert fast == exported
    assert sum(n for k, n in fast.items() if "InstanceNormalization" in k) == 3
    with pytest.raises(InvalidInputError, match="refuses the input"):
        to_graph(nn.GroupNorm(4, 8).eval(), input_shape=(1, 6, 4, 4), route="fast")


class Attention(nn.Module):
    """timm's Attention block: qkv Linear, reshape, permute, unbind; fused
    (F.scaled_dot_product_attention) or written out (scale, matmul, softmax, matmul)."""

    def __init__(self, dim: int = 32, heads: int = 4, fused: bool = True):
        super().__init__()
        self.heads, self.fused, self.scale = heads, fused, (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        if self.fused:
            x = F.scaled_dot_product_attention(q, k, v)
        else:
            attn = (q * self.scale) @ k.transpose(-2, -1)
            x = attn.softmax(dim=-1) @ v
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


@pytest.mark.parametrize("fused", [True, False])
def test_attention_gives_the_export_routes_keys(fused):
    torch.manual_seed(0)
    model = nn.Sequential(Attention(fused=fused), nn.LayerNorm(32), Attention(fused=fused)).eval()
    fast, exported = both_routes(model, (torch.randn(2, 10, 32),))
    assert fast == exported
    assert sum(n for k, n in fast.items() if "Softmax" in k) == 2


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mobilenet_v2", "resnet18", "resnet50"])
def test_zoo_convnets_take_the_fast_path_with_the_export_routes_keys(name):
    model, inputs = zoo.build(name)
    fast, exported = both_routes(model, inputs)
    assert fast == exported
    assert sum(fast.values()) > 20


@pytest.mark.skipif(not OFA_DATA.exists(), reason="OFA net configs are absent")
def test_an_ofa_net_takes_the_fast_path_with_the_export_routes_keys():
    model, inputs = zoo.from_ofa_config(OFA_DATA)
    fast, exported = both_routes(model, inputs)
    assert fast == exported
    assert any("HardSigmoid" in k for k in fast)  # squeeze-excite gates


def test_vit_goes_the_export_route_and_says_which_submodule():
    model, inputs = zoo.build("vit_tiny")
    with pytest.raises(fastpath.Unmappable) as e:
        to_graph(model, inputs=inputs, route="fast")
    assert "route='export'" in str(e.value) and "submodule '" in str(e.value)


TIMM = ["resnet18", pytest.param("mobilenetv3_small_050", marks=pytest.mark.heavy),
        pytest.param("efficientnet_b0", marks=pytest.mark.heavy)]


@pytest.mark.slow
@pytest.mark.parametrize("name", TIMM)
def test_timm_models_take_the_fast_path_with_the_export_routes_keys(name):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False).eval()
    fast, exported = both_routes(model, (torch.randn(1, 3, 224, 224),))
    assert fast == exported


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vit_tiny_patch16_224",
                                  pytest.param("convnext_atto", marks=pytest.mark.heavy)])
def test_timm_models_the_fast_path_cannot_map_are_exported_whole(name):
    timm = pytest.importorskip("timm")
    model = timm.create_model(name, pretrained=False).eval()
    loaded = to_graph(model, input_shape=(1, 3, 224, 224), route="auto")
    assert loaded.route == "export" and "submodule" in loaded.fallback
    assert sum(keys(loaded.graph).values()) > 10


class Block(nn.Module):
    def __init__(self, c: int, k: int):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(c, c, k, 1, k // 2, groups=c, bias=False),
                                  nn.BatchNorm2d(c), nn.ReLU6())
        self.proj = nn.Conv2d(c, c, 1)

    def forward(self, x):
        return x + self.proj(self.conv(x))


def test_identical_blocks_are_converted_once_and_give_the_same_graph(monkeypatch):
    fastpath.clear_cache()
    traced = []
    real = fastpath._Tracer.trace

    def counting(self, m, *a, **k):
        traced.append(type(m))
        return real(self, m, *a, **k)

    monkeypatch.setattr(fastpath._Tracer, "trace", counting)
    x = torch.zeros(1, 8, 16, 16)
    a = nn.Sequential(Block(8, 3), Block(8, 3), Block(8, 5)).eval()
    first = keys(fastpath.to_graph(a, (x,)))
    assert traced.count(Block) == 1  # three blocks, one trace
    b = nn.Sequential(Block(8, 5), Block(8, 3)).eval()  # a new candidate of the same blocks
    cached = keys(fastpath.to_graph(b, (x,)))
    assert traced.count(Block) == 1
    fastpath.clear_cache()
    assert keys(fastpath.to_graph(b, (x,))) == cached
    assert sum(first.values()) == 3 * 2  # per block: the depthwise conv, the 1x1 conv + add


class DataDependent(nn.Module):
    def forward(self, x):
        return x.relu() if x.sum() > 0 else x.sigmoid()


def test_an_unmapped_function_names_the_submodule_and_the_export_route():
    model = nn.Sequential(nn.ReLU(), Rolls()).eval()
    with pytest.raises(fastpath.Unmappable) as e:
        to_graph(model, input_shape=(1, 3, 8, 8), route="fast")
    msg = str(e.value)
    assert "submodule '1'" in msg and "roll" in msg and "route='export'" in msg


def test_untraceable_control_flow_names_the_submodule():
    model = nn.Sequential(nn.Conv2d(3, 3, 1), DataDependent()).eval()
    with pytest.raises(fastpath.Unmappable) as e:
        fastpath.to_graph(model, (torch.zeros(1, 3, 4, 4),))
    assert "submodule '1'" in str(e.value) and "cannot be traced" in str(e.value)


def test_an_input_that_does_not_fit_is_refused_with_the_modules_own_error():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8 * 6 * 6, 10)).eval()
    with pytest.raises(InvalidInputError) as e:
        to_graph(model, input_shape=(1, 4, 8, 8))
    msg = str(e.value)
    assert "\n" not in msg and "submodule '0'" in msg and "channels" in msg
    with pytest.raises(InvalidInputError) as e:
        to_graph(model, input_shape=(1, 3, 9, 9))
    assert "submodule '2'" in str(e.value) and "\n" not in str(e.value)


class Twice(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return self.conv(x) + self.conv(x)


def test_the_same_call_twice_is_not_guessed():
    # the exporter keeps one of two identical nodes; the fast path refuses rather than guess
    with pytest.raises(fastpath.Unmappable, match="twice"):
        fastpath.to_graph(Twice().eval(), (torch.zeros(1, 3, 8, 8),))
    for fn, why in ((lambda x: x.softmax(dim=1), "softmax over dim=1"),
                    (lambda x: torch.cat([x, x.relu()], dim=-1), "cat over dim=-1"),
                    (lambda x: x + 1.0, "Add with a Python number")):
        model = nn.Sequential(nn.Conv2d(3, 4, 1), Lambda(fn)).eval()
        with pytest.raises(fastpath.Unmappable, match=why):
            fastpath.to_graph(model, (torch.zeros(1, 3, 8, 8),))


class Lambda(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


class MaskedAttention(nn.Module):
    """F.scaled_dot_product_attention with the masks the fast path maps: is_causal (with and
    without a scale), a constant boolean mask, a float mask (a buffer, or the model's input)."""

    def __init__(self, mode: str, n: int = 10):
        super().__init__()
        self.mode = mode
        self.qkv = nn.Linear(32, 96)
        self.register_buffer("keep", torch.ones(n, n, dtype=torch.bool).tril())
        self.register_buffer("bias", torch.randn(n, n))

    def forward(self, x, mask=None):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, 4, c // 4).permute(2, 0, 3, 1, 4).unbind(0)
        if self.mode == "causal":
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        elif self.mode == "causal_scale":
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.3)
        elif self.mode == "bool":
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=self.keep)
        elif self.mode == "float":
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=self.bias)
        else:  # the mask is the model's second input
            y = F.scaled_dot_product_attention(q, k, v, mask)
        return y.transpose(1, 2).reshape(b, n, c)


@pytest.mark.parametrize("mode", ["causal", "causal_scale", "bool", "float", "input"])
def test_attention_with_a_mask_gives_the_export_routes_keys(mode):
    torch.manual_seed(0)
    x = torch.randn(2, 10, 32)
    inputs = (x, torch.randn(10, 10)) if mode == "input" else (x,)
    fast, exported = both_routes(MaskedAttention(mode).eval(), inputs)
    assert fast == exported
    texts = "\n".join(fast)
    assert "Softmax" in texts
    if mode != "bool":  # the mask's Add is in the attention kernel, with the mask's shape
        assert any(k.startswith("attention|") and "Add" in k and "float32[10x10]" in k for k in fast)
    else:  # a row masked whole gives zeros: Where(IsNaN(p), 0, p) after the softmax
        assert "IsNaN" in texts and "Where" in texts


def test_attention_the_fast_path_does_not_map_names_why():
    class Dropout(nn.Module):
        def forward(self, q, k, v):
            return F.scaled_dot_product_attention(q, k, v, dropout_p=0.1)

    x = torch.zeros(2, 4, 10, 8)
    seq = torch.zeros(10, 2, 8)
    for model, inputs, why in ((nn.MultiheadAttention(8, 2), (seq, seq, seq), "MultiheadAttention"),
                               (Dropout(), (x, x, x), "dropout")):
        with pytest.raises(fastpath.Unmappable, match=why) as e:
            to_graph(model.eval(), inputs=inputs, route="fast")
        assert "route='export'" in str(e.value)
