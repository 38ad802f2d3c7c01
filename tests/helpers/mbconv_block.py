"""A MobileNet inverted-residual block written with onnx.helper, for the kernel-boundary tests."""

from __future__ import annotations

from tests.helpers.onnx_builders import const, model, node, rand, save, tensor


def mobilenet_block(directory, *, cin=8, hw=28, mid=24, cout=8, stride=1, act="Clip",
                    expand=True, project=True, residual=True, mid_output=False,
                    shared_bounds=True, name="block") -> str:
    """DIRECTORY/NAME.onnx: x -> [1x1 expand + act] -> 3x3 depthwise + act -> [1x1 project
    (+ x)], biased convs as a folded batch norm leaves them; `mid_output`: the expanded tensor is
    a graph output too; `shared_bounds`: the clips read one pair of bound constants (as hwlat's
    exporter writes them), else each its own (as torch's does)."""
    nodes, inits, x, c = [], [], "x", cin

    def conv(src, cout_, k, groups, s, out, seed):
        inits.extend([const(f"w_{out}", rand(cout_, 1 if groups > 1 else c, k, k, seed=seed)),
                      const(f"b_{out}", rand(cout_, seed=seed + 10))])
        nodes.append(node("Conv", [src, f"w_{out}", f"b_{out}"], [out], kernel_shape=[k, k],
                          pads=[k // 2] * 4, strides=[s, s], group=groups))

    def activation(src, out):
        if act == "Clip":
            lo, hi = ("lo", "hi") if shared_bounds else (f"lo_{out}", f"hi_{out}")
            if not shared_bounds:
                inits.extend([const(lo, 0.0), const(hi, 6.0)])
            nodes.append(node("Clip", [src, lo, hi], [out]))
        else:
            nodes.append(node(act, [src], [out]))

    inits += [const("lo", 0.0), const("hi", 6.0)]
    if expand:
        conv(x, mid, 1, 1, 1, "e", 1)
        activation("e", "ea")
        x, c = "ea", mid
    conv(x, c, 3, c, stride, "d", 2)
    activation("d", "da")
    y, out_c, out_hw = "da", c, (hw + 2 - 3) // stride + 1
    if project:
        conv("da", cout, 1, 1, 1, "p", 3)
        y, out_c = "p", cout
        if residual:
            nodes.append(node("Add", ["p", "x"], ["r"]))
            y = "r"
    outputs = [tensor(y, [1, out_c, out_hw, out_hw])]
    if mid_output:
        outputs.append(tensor("ea", [1, mid, hw, hw]))
    m = model(nodes, [tensor("x", [1, cin, hw, hw])], outputs, inits)
    return save(m, directory / f"{name}.onnx")
