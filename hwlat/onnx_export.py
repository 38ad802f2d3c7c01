"""torch.nn.Module -> checked ONNX file, with onnxruntime's output compared to torch's.

The file appears only when everything passed: export goes to a temporary file beside the
target and is renamed over it at the end, so a failure never leaves a partial model.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from hwlat.errors import BackendError, HwlatError, InvalidInputError


@dataclass(frozen=True)
class ExportReport:
    path: Path
    nodes: int
    seconds: float
    max_abs_diff: float | None  # None when onnxruntime could not run the model
    note: str = ""


def export(model, example_inputs, path, *, opset: int | None = None,
           input_names: tuple[str, ...] | None = None, compare: bool = True) -> ExportReport:
    import onnx
    import torch

    from hwlat.zoo import onnx_translations

    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    example_inputs = tuple(example_inputs)
    path = Path(path)
    if path.parent and not path.parent.exists():
        raise InvalidInputError(f"{path.parent}: no such directory")
    model = model.eval()
    t0 = time.perf_counter()
    remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp",
                               dir=path.parent or ".")
    os.close(fd)
    try:
        with torch.no_grad(), _quiet():
            program = torch.onnx.export(
                model, example_inputs, dynamo=True, opset_version=opset,
                input_names=list(input_names) if input_names else None,
                custom_translation_table=onnx_translations(), external_data=False,
                verbose=False,
            )
            program.save(tmp)
        proto = onnx.load(tmp)
        onnx.checker.check_model(proto)
        diff, note = (None, "comparison skipped") if not compare else \
            _compare_with_onnxruntime(model, example_inputs, tmp, proto)
        os.replace(tmp, path)
    except HwlatError:
        raise
    except Exception as e:
        raise BackendError("export failed", e, limit=400) from e
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return ExportReport(path, len(proto.graph.node), time.perf_counter() - t0, diff, note)


def remove_stale_temps(path: Path) -> list[Path]:
    """Remove the temporary files an export to `path` left when its process was killed:
    `.<name>.<pid>.<random>.tmp` whose process no longer runs (a live exporter's file stays)."""
    removed = []
    folder = path.parent if str(path.parent) else Path(".")
    prefix = f".{path.name}."
    try:
        candidates = [p for p in folder.iterdir() if p.name.startswith(prefix) and p.name.endswith(".tmp")]
    except OSError:
        return removed
    for p in candidates:
        pid = p.name[len(prefix):].split(".", 1)[0]
        if not pid.isdigit() or _running(int(pid)):
            continue
        with contextlib.suppress(OSError):
            p.unlink()
            removed.append(p)
    return removed


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # another user's process, or not a pid: leave its file alone
    return True


def _compare_with_onnxruntime(model, example_inputs, path, proto) -> tuple[float | None, str]:
    import numpy as np
    import onnxruntime as ort
    import torch

    custom = sorted({f"{n.domain}.{n.op_type}" for n in proto.graph.node
                     if n.domain not in ("", "ai.onnx")})
    if custom:
        return None, f"onnxruntime comparison skipped: custom ops {', '.join(custom)}"
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    feeds = {i.name: x.detach().cpu().numpy() for i, x in zip(sess.get_inputs(), example_inputs, strict=False)}
    got = sess.run(None, feeds)
    with torch.no_grad():
        want = model(*example_inputs)
    want = [want] if isinstance(want, torch.Tensor) else list(want)
    diff = max(float(np.max(np.abs(g - w.numpy()), initial=0.0)) for g, w in zip(got, want, strict=True))
    return diff, ""


@contextlib.contextmanager
def _quiet():
    """The exporter prints progress lines; keep them off the user's terminal."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        yield
