"""Runners: what times kernels and whole models on a device (onnxruntime, TVM, TVM over RPC, and
the analytic devices' estimators), the RPC tracker/server processes, and the profiling loop that
fills a device's table. Runner modules are imported only when a device needs them."""

from __future__ import annotations

import importlib

from hwlat.devices import list_devices
from hwlat.devices.spec import RPC_RUNNER, DeviceSpec
from hwlat.errors import InvalidInputError
from hwlat.runners.base import Environment, InModelRunner, Runner


def load_runner(spec: DeviceSpec, **options) -> Runner:
    """The runner the device file names ("package.module:Class"); `options` go to its
    constructor (an RPC runner's tracker and key)."""
    module, _, cls = spec.runner.partition(":")
    try:
        runner = getattr(importlib.import_module(module), cls)(spec, **options)
    except (ImportError, AttributeError) as e:
        raise InvalidInputError(f"device '{spec.name}': cannot load runner {spec.runner} ({e})") from e
    if not isinstance(runner, Runner):
        raise InvalidInputError(f"device '{spec.name}': {spec.runner} does not offer what a runner "
                                "offers (hwlat.runners.base.Runner)")
    return runner


def get_runner(spec: DeviceSpec, tracker: str | None = None, key: str | None = None) -> Runner:
    """The device's runner; `tracker` (HOST:PORT) and `key` apply to devices timed over RPC."""
    if tracker is None and key is None:
        return load_runner(spec)
    if not spec.timed_over_rpc:
        remote = ", ".join(d.name for d in list_devices() if d.timed_over_rpc)
        raise InvalidInputError(f"device '{spec.name}' is not timed over RPC; --tracker and --key apply to {remote}")
    return load_runner(spec, tracker=tracker, key=key)


__all__ = ["RPC_RUNNER", "Environment", "InModelRunner", "Runner", "get_runner", "load_runner"]
