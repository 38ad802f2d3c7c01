"""hwlat: a hardware-aware compiler and latency estimator for neural networks.

Heavy dependencies (torch, tvm) are imported only by the functions that need them, so
`import hwlat` and table queries start fast.
"""

from hwlat.errors import HwlatError, InvalidInputError, InvalidModelError
from hwlat.paths import home, home_folder
from hwlat.version import __version__  # noqa: F401  (hwlat.__version__)


def load(path):
    """Load and validate an ONNX model into hwlat's graph IR."""
    from hwlat.graph import load as _load

    return _load(path)


def export(model, example_inputs, path, **kwargs):
    """Export a torch module to ONNX, check it, and compare onnxruntime's output with torch's."""
    from hwlat.onnx_export import export as _export

    return _export(model, example_inputs, path, **kwargs)


# the Python API (hwlat/api.py), imported on first use so `import hwlat` stays light
_API = ("Table", "calibrate", "compile", "inspect", "predict", "profile", "validate")


def __getattr__(name: str):
    if name in _API:
        from hwlat import api

        return getattr(api, name)
    raise AttributeError(f"module 'hwlat' has no attribute {name!r}")


__all__ = ["HwlatError", "InvalidInputError", "InvalidModelError", "Table", "calibrate",
           "compile", "export", "home", "home_folder", "inspect", "load", "predict", "profile", "validate"]
