"""Corpus smoke test: the block patterns of the corpus families (`hwlat zoo --corpus`) compile for
the host CPU and agree with onnxruntime: grouped convs (RegNet, ResNeXt), a channel shuffle with
traced shape arithmetic (ShuffleNet), dense concatenation (DenseNet), channels-last LayerNorm with
erf GELU (ConvNeXt), SiLU with squeeze-excite (EfficientNet) and attention with a head dim of
20 (MobileViT-XXS, which the fused attention kernel's tiles once refused)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from hwlat.lowering import compile_model, run_library
from tests.helpers import onnx_builders as b

pytestmark = [pytest.mark.tvm, pytest.mark.slow]

BLOCKS = {
    "grouped_conv": b.grouped_conv_block,
    "channel_shuffle": b.channel_shuffle_model,
    "dense_concat": b.dense_concat_block,
    "convnext_ln_gelu": b.convnext_block,
    "silu_squeeze_excite": b.silu_se_block,
    "mobilevit_attention_d20": b.mobilevit_attention_block,
}


@pytest.mark.parametrize("name", list(BLOCKS))
def test_corpus_block_compiles_and_matches_onnxruntime(name, tmp_path):
    src = b.save(BLOCKS[name](), tmp_path / f"{name}.onnx")
    report = compile_model(src, "host", output=tmp_path / f"{name}.so")
    assert report.max_abs_diff is not None, report.note
    x = b.rand(*report.inputs[0].shape, seed=7)
    got = run_library(report.output, _npy(tmp_path, x))
    want = ort.InferenceSession(src, providers=["CPUExecutionProvider"]).run(None, {"x": x})
    (out,) = got.values()
    assert np.ptp(want[0]) > 0.1  # a constant reference would prove nothing
    assert out.shape == want[0].shape
    rel = np.max(np.abs(out - want[0])) / np.max(np.abs(want[0]))
    assert rel < 1e-4, rel


def _npy(directory, x):
    path = directory / "x.npy"
    np.save(path, x)
    return path
