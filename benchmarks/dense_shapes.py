"""The conv and matmul shapes of the zoo's mobilenet_v2, resnet18, vit_tiny and OFA's note10 30 ms
net, for the dense-kernel benchmarks: build/dense_shapes.json, written on first use.

    .venv/bin/python benchmarks/dense_shapes.py      # (re)writes it

Models missing from build/compile_bench/ are exported there first, as compile_vs_runtimes.py
does. Per model: "conv" (cin, hw, cout, k, stride, pads in ONNX order, groups, count) and
"matmul" (x shape, w shape, op: Gemm's w is (n, k), MatMul's (k, n)).
"""

from __future__ import annotations

import collections
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHAPES = ROOT / "build" / "dense_shapes.json"
MODELS = ("mobilenet_v2", "resnet18", "vit_tiny", "ofa")


def _model(name: str):
    import onnx

    path = ROOT / "build" / "compile_bench" / f"{name}.onnx"
    if not path.exists():
        from compile_vs_runtimes import build_model  # the sibling benchmark

        from hwlat.onnx_export import export

        path.parent.mkdir(parents=True, exist_ok=True)
        model, inputs = build_model(name)
        model.eval()
        export(model, inputs, path, compare=False)
    return onnx.shape_inference.infer_shapes(onnx.load(str(path)))


def _shapes(m) -> dict:
    import onnx

    g = m.graph
    dims = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in [*g.value_info, *g.input, *g.output]}
    inits = {i.name: list(i.dims) for i in g.initializer}
    convs, mms = collections.Counter(), collections.Counter()
    for node in g.node:
        if node.op_type == "Conv":
            a = {x.name: onnx.helper.get_attribute_value(x) for x in node.attribute}
            xs, ws = dims[node.input[0]], inits[node.input[1]]
            convs[json.dumps({"cin": xs[1], "hw": xs[2:], "cout": ws[0], "k": ws[2:],
                              "stride": list(a.get("strides", [1, 1])),
                              "pads": list(a.get("pads", [0, 0, 0, 0])),
                              "groups": a.get("group", 1)})] += 1
        elif node.op_type in ("MatMul", "Gemm") and node.input[1] in inits:
            mms[json.dumps({"x": dims.get(node.input[0]), "w": inits[node.input[1]],
                            "op": node.op_type})] += 1
    return {"conv": [dict(json.loads(k), count=c) for k, c in convs.items()],
            "matmul": [dict(json.loads(k), count=c) for k, c in mms.items()]}


def write_shapes() -> dict:
    shapes = {name: _shapes(_model(name)) for name in MODELS}
    SHAPES.parent.mkdir(parents=True, exist_ok=True)
    SHAPES.write_text(json.dumps(shapes, indent=1))
    return shapes


def load_shapes() -> dict:
    return json.loads(SHAPES.read_text()) if SHAPES.exists() else write_shapes()


if __name__ == "__main__":
    for name, s in write_shapes().items():
        print(f"{name}: {len(s['conv'])} distinct convs, {len(s['matmul'])} matmuls")
