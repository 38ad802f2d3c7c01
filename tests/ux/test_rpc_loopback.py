"""The README's farm flow on one machine, as a user types it: `hwlat rpc tracker`, `hwlat rpc
server --key cpu-tvm-rpc`, `hwlat profile --device cpu-tvm-rpc --tracker`, then predict."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from hwlat.runners import rpc
from tests.helpers.cli import ROOT
from tests.helpers.onnx_builders import conv_chain, save
from tests.runners.test_rpc import free_port

pytestmark = pytest.mark.tvm


def _start(home, *args) -> subprocess.Popen:
    env = {**os.environ, "HWLAT_HOME": str(home), "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "hwlat.cli", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _end(p: subprocess.Popen) -> None:
    """Ctrl-C, as a user stops it; then its own process group, if anything is left."""
    if p.poll() is None:
        p.send_signal(signal.SIGINT)
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    p.wait(timeout=30)


def test_profile_through_a_loopback_farm(tmp_path, hwlat_cli):
    home = tmp_path / "hwlat-home"
    home.mkdir(exist_ok=True)
    model = save(conv_chain(2, c=8, hw=16), tmp_path / "m.onnx")
    port = free_port()
    address = f"127.0.0.1:{port}"
    tracker = _start(home, "rpc", "tracker", "--port", port)
    server = None
    try:
        deadline = time.monotonic() + 150
        while True:  # the tracker imports tvm: seconds
            try:
                rpc.tracker_status(address, timeout=2.0)
                break
            except rpc.RpcError:
                assert time.monotonic() < deadline and tracker.poll() is None, tracker.stdout.read()
                time.sleep(1)
        server = _start(home, "rpc", "server", "--tracker", address, "--key", "cpu-tvm-rpc",
                        "--port", free_port())
        while not rpc.tracker_status(address, timeout=2.0).servers.get("cpu-tvm-rpc"):
            assert time.monotonic() < deadline and server.poll() is None, server.stdout.read()
            time.sleep(1)
        r = hwlat_cli("rpc", "status", "--tracker", address, "--json")
        assert r.returncode == 0, r.stderr
        assert [k["key"] for k in json.loads(r.stdout)["keys"]] == ["cpu-tvm-rpc"]
        r = hwlat_cli("profile", model, "--device", "cpu-tvm-rpc", "--tracker", address, timeout=600)
        assert r.returncode == 0, r.stderr
        assert "kernels measured" in r.stdout
        r = hwlat_cli("lut", "show", "--device", "cpu-tvm-rpc", "--json")
        entries = json.loads(r.stdout)["entries"]
        assert entries and all(e["median_ms"] > 0 for e in entries)
        r = hwlat_cli("predict", model, "--device", "cpu-tvm-rpc", "--json")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["estimated_share"] == 0.0
        r = hwlat_cli("profile", model, "--device", "cpu-tvm-rpc", "--rpc", address)  # the old name
        assert r.returncode == 0 and "0 kernels measured" in r.stdout, r.stderr
    finally:
        for p in (server, tracker):
            if p is not None:
                _end(p)
