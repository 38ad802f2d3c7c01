"""The RPC tracker and servers as real processes on loopback, and profiling through them."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

import pytest

from hwlat.devices import load_device
from hwlat.devices.spec import DeviceSpec, MeasureSpec
from hwlat.errors import HwlatError, InvalidInputError
from hwlat.graph import fuse, load
from hwlat.graph.extract import extract_kernel
from hwlat.lut import TableStore
from hwlat.runners import rpc
from hwlat.runners.profile import plan, profile
from hwlat.runners.tvm import TvmRunner
from hwlat.runners.tvm_rpc import TvmRpcRunner
from tests.helpers.onnx_builders import conv_chain, save

pytestmark = pytest.mark.tvm

KEY = "hwlat-test"
# few repeats and a loose spread: the two servers share this machine's 2 cores with the client
QUICK = MeasureSpec(warmup=2, repeats=7, max_cv=0.5, max_rounds=1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def device(name: str, runner: str) -> DeviceSpec:
    return DeviceSpec(name=name, description="loopback", runtime="tvm", runner=runner, threads=1,
                      pipeline="default", target={"kind": "llvm", "mcpu": "host"}, measure=QUICK)


# the tracker runs the way `hwlat rpc tracker` runs it: in the foreground until Ctrl-C
# (SIGINT as a terminal's foreground process has it: a test run started in the background,
# `(make test &)`, passes SIGINT down ignored, and the tracker then never sees the Ctrl-C)
FOREGROUND = """
import faulthandler, signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)
faulthandler.register(signal.SIGUSR1)  # the teardown asks for its stacks if it hangs
from hwlat.devices import load_device
from hwlat.runners import rpc
proc = rpc.start_tracker(port=int(sys.argv[1]), timeout=150)
print(proc.popen.pid, flush=True)
rpc.serve_forever(proc)
"""


@dataclass
class Farm:
    address: str
    servers: list[rpc.Proc]


@pytest.fixture(scope="module")
def farm():
    port = free_port()
    address = f"127.0.0.1:{port}"
    fg = subprocess.Popen([sys.executable, "-c", FOREGROUND, str(port)], stdout=subprocess.PIPE, text=True)
    servers = [rpc.start_server(address, key=KEY, port=free_port(), wait=False) for _ in range(2)]
    try:
        tracker_group = int(fg.stdout.readline())  # started together: each imports tvm, ~10 s
        for s in servers:
            rpc.wait_ready(s, timeout=150)
        assert all(s.warning is None for s in servers)  # loopback: nothing exposed
        yield Farm(address, servers)
    finally:
        for s in servers:
            rpc.stop(s)
        fg.send_signal(signal.SIGINT)  # Ctrl-C
        try:
            fg.wait(30)
        except subprocess.TimeoutExpired:
            fg.send_signal(signal.SIGUSR1)  # its Python stacks, to the captured stderr
            time.sleep(2)
            fg.kill()
            fg.wait()
            pytest.fail("the foreground tracker did not exit within 30 s of Ctrl-C")
    assert not rpc._group_alive(tracker_group) and not rpc._listening("127.0.0.1", port)
    for s in servers:
        assert not rpc._group_alive(s.popen.pid), f"server group {s.popen.pid} outlived stop()"
        assert not rpc._listening(s.host, s.port), f"{s.address} still listened on"


@pytest.fixture(scope="module")
def kernels(tmp_path_factory):
    """Four distinct convs, heavy enough to time (1x1 and 3x3, 16..32 channels, 32x32)."""
    path = save(conv_chain(4, c=16, hw=32), tmp_path_factory.mktemp("m") / "m.onnx")
    g = load(path)
    return path, g, fuse(g)


def test_tracker_lists_both_servers_under_the_key(farm):
    status = rpc.tracker_status(farm.address, timeout=2.0)
    assert status.servers[KEY] == tuple(sorted(("127.0.0.1", s.port) for s in farm.servers))
    deadline = time.monotonic() + 10  # a server is listed a moment before it offers itself
    while status.queue.get(KEY) != (2, 0) and time.monotonic() < deadline:
        time.sleep(0.1)
        status = rpc.tracker_status(farm.address, timeout=2.0)
    assert status.queue[KEY] == (2, 0)  # both free, no request waiting


def test_kernels_are_timed_in_parallel_on_every_server(farm, kernels):
    _, g, ks = kernels
    runner = TvmRpcRunner(device("rpc-loop", "hwlat.runners.tvm_rpc:TvmRpcRunner"),
                          tracker=farm.address, key=KEY)
    env = runner.environment()
    assert env.cpu == f"rpc:{KEY}" and env.versions["rpc_key"] == KEY
    got = dict(runner.time_kernels([extract_kernel(g, k) for k in ks]))
    assert sorted(got) == list(range(len(ks)))
    assert all(t.median_ms > 0 and len(t.samples_ms) == QUICK.repeats for t in got.values())
    assert sorted(runner.timed) == sorted(s.address for s in farm.servers)  # both took work
    assert runner.lost == [] and runner.in_flight == {}


def test_wrong_key_names_the_keys_the_tracker_has(farm):
    runner = TvmRpcRunner(device("rpc-loop", "hwlat.runners.tvm_rpc:TvmRpcRunner"),
                          tracker=farm.address, key="pixel9")
    with pytest.raises(rpc.NoServerError, match=rf"no server under key 'pixel9' \(servers by key: {KEY} \("):
        runner.environment()
    with pytest.raises(rpc.NoServerError, match="hwlat rpc server --tracker .* --key pixel9"):
        next(runner.time_kernels([conv_chain(1)]))


@pytest.mark.skipif(not (os.environ.get("HWLAT_CROSS_CC") or shutil.which("aarch64-linux-gnu-g++")),
                    reason="needs an aarch64 cross compiler")
def test_a_kernel_that_fails_on_a_live_server_is_not_retried(farm):
    # built for arm64, sent to these x86 servers: loading it fails there, and the server lives on
    runner = TvmRpcRunner(load_device("arm64-mobile"), tracker=farm.address, key=KEY)
    with pytest.raises(HwlatError, match="the kernel failed on server 127.0.0.1:"):
        runner.time_kernel(conv_chain(1))
    assert runner.lost == []


def test_a_kernel_that_hangs_is_bounded_by_the_kernel_timeout(farm):
    # a 1024^3 matmul, untuned: seconds a run on this machine, far past a 1.5 s session
    from onnx import TensorProto, helper

    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [1024, 1024])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, [1024, 1024])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1024, 1024])
    slow = helper.make_model(helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["y"])],
                                               "slow", [a, b], [y]),
                             opset_imports=[helper.make_opsetid("", 17)])
    runner = TvmRpcRunner(device("loop", "hwlat.runners.tvm_rpc:TvmRpcRunner"),
                          tracker=farm.address, key=KEY, kernel_timeout=1.5, max_attempts=2)
    t0 = time.monotonic()
    with pytest.raises(HwlatError, match="timed out: the server ended the session after the "
                                         "kernel timeout of 1.5 s"):
        runner.time_kernel(slow)
    assert len(runner.lost) == 2 and time.monotonic() - t0 < 60
    # the servers live on and take the next kernel
    assert runner.time_kernel(conv_chain(1)).median_ms > 0


def _has_gpu() -> bool:
    return shutil.which("nvidia-smi") is not None and subprocess.run(
        ["nvidia-smi", "-L"], capture_output=True).returncode == 0


@pytest.mark.gpu
@pytest.mark.skipif(not _has_gpu(), reason="needs a CUDA GPU")
def test_cuda_kernels_are_timed_on_the_gpu_through_a_loopback_server(farm, kernels):
    _, g, ks = kernels
    runner = TvmRpcRunner(load_device("cuda-gpu"), tracker=farm.address, key=KEY)
    assert "rpc:" not in runner.environment().cpu  # the GPU's own name
    got = dict(runner.time_kernels([extract_kernel(g, k) for k in ks]))
    assert sorted(got) == list(range(len(ks))) and all(t.median_ms > 0 for t in got.values())


def test_a_server_without_fork_times_kernels_in_turn_in_one_session(farm):
    # the mode a machine with a CUDA GPU gets (a forked session cannot use CUDA there)
    server = rpc.start_server(farm.address, key="hwlat-nofork", port=free_port(), fork=False,
                              timeout=150)
    try:
        assert "--no-fork" in server.popen.args
        runner = TvmRpcRunner(device("loop-nofork", "hwlat.runners.tvm_rpc:TvmRpcRunner"),
                              tracker=farm.address, key="hwlat-nofork")
        opened = []
        open_session = runner._open
        runner._open = lambda timeout: opened.append(open_session(timeout)) or opened[-1]
        got = dict(runner.time_kernels([conv_chain(1, c=8 + 4 * i) for i in range(3)]))
        assert sorted(got) == [0, 1, 2] and all(t.median_ms > 0 for t in got.values())
        assert len(opened) == 1  # one session (a new process there) for the kernels in turn
    finally:
        rpc.stop(server)
    assert ("--no-fork" in farm.servers[0].popen.args) == rpc.has_cuda_gpu()  # the default


def test_a_session_past_the_kernel_timeout_is_not_given_another_kernel(farm):
    runner = TvmRpcRunner(device("rpc-loop", "hwlat.runners.tvm_rpc:TvmRpcRunner"),
                          tracker=farm.address, key=KEY)
    opened = []
    open_session = runner._open

    def aged(timeout):  # every session looks opened a kernel timeout ago
        s = open_session(timeout)
        s.opened -= runner.kernel_timeout
        opened.append(s)
        return s

    runner._open = aged
    got = dict(runner.time_kernels([conv_chain(1, c=8 + 4 * i) for i in range(3)]))
    assert sorted(got) == [0, 1, 2] and len(opened) == 3  # a new session for each kernel


def test_profile_survives_a_server_killed_mid_kernel(farm, kernels, tmp_path):
    path, g, ks = kernels
    spec = device("rpc-loop", "hwlat.runners.tvm_rpc:TvmRpcRunner")
    runner = TvmRpcRunner(spec, tracker=farm.address, key=KEY, request_timeout=30.0)
    killed: list[rpc.Proc] = []

    def kill_the_busy_server():
        # after the first kernel, as soon as one is on a server: SIGKILL that server's group
        by_address = {s.address: s for s in farm.servers}
        deadline = time.monotonic() + 60
        while not killed and time.monotonic() < deadline:
            for server in list(runner.in_flight):
                os.killpg(by_address[server].popen.pid, signal.SIGKILL)
                killed.append(by_address[server])
                break
            time.sleep(0.002)

    killer = threading.Thread(target=kill_the_busy_server)
    done = []

    def on_kernel(k):
        done.append(k)
        if len(done) == 1:
            killer.start()

    with TableStore(tmp_path / "t.sqlite") as store:
        todo = plan([path], spec, runner, store)
        assert len(todo.kernels) == len(ks) == 4
        profile(todo, spec, runner, store, on_kernel=on_kernel)
        killer.join()
        entries = {e.key: e for e in store.entries("rpc-loop")}
        assert plan([path], spec, runner, store).kernels == {}
    assert len(killed) == 1 and len(runner.lost) == 1, runner.lost  # one kernel retried, once
    assert killed[0].address in runner.lost[0]
    rpc.stop(killed[0])  # reaps it; raises if its port is still held
    assert set(entries) == {k.key.text() for k in ks}  # the table is complete
    assert {e.pipeline for e in entries.values()} == {"tvm-default"}

    # the same kernels built and timed here: one machine, so the same latency within noise
    local = TvmRunner(device("cpu-loop", "hwlat.runners.tvm:TvmRunner"))
    for k in ks:
        here = local.time_kernel(extract_kernel(g, k)).median_ms
        there = entries[k.key.text()].median_ms
        assert 0.33 < there / here < 3.0, (k.key.text(), there, here)


def test_when_every_server_dies_the_error_says_so(farm, kernels):
    # the last test on the farm: every server still alive is killed once a kernel is on one
    _, g, ks = kernels
    live = [s for s in farm.servers if s.popen.poll() is None]
    runner = TvmRpcRunner(device("rpc-loop", "hwlat.runners.tvm_rpc:TvmRpcRunner"),
                          tracker=farm.address, key=KEY, request_timeout=5.0)

    def kill_when_busy():
        while not runner.in_flight:
            time.sleep(0.002)
        for server in live:
            os.killpg(server.popen.pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_when_busy)
    killer.start()
    with pytest.raises(rpc.RpcError, match=f"no server left under key '{KEY}' .* with 4 of 4 kernels to time"):
        dict(runner.time_kernels([extract_kernel(g, k) for k in ks]))
    killer.join()
    assert 1 <= len(runner.lost) <= len(live)


def test_unreachable_tracker_fails_fast_and_says_how_to_start_one():
    port = free_port()
    t0 = time.monotonic()
    with pytest.raises(rpc.TrackerUnreachableError, match=rf"hwlat rpc tracker --host 127.0.0.1 --port {port}"):
        rpc.tracker_status(f"127.0.0.1:{port}", timeout=2.0)
    assert time.monotonic() - t0 < 2.0


def test_something_else_on_the_port_is_not_taken_for_a_tracker():
    # a listener that answers the handshake with the wrong magic, and one that never answers
    for reply in (b"\x00\x00\x00\x00", None):
        with socket.socket() as srv:
            srv.bind(("127.0.0.1", 0))
            srv.listen()
            release = threading.Event()

            def answer(reply=reply, srv=srv, release=release):
                conn, _ = srv.accept()
                with conn:
                    conn.recv(4)
                    if reply is not None:
                        conn.sendall(reply)
                    release.wait(5)

            t = threading.Thread(target=answer)
            t.start()
            t0 = time.monotonic()
            match = "is not a TVM RPC tracker" if reply else "did not answer as a TVM RPC tracker"
            with pytest.raises(rpc.TrackerUnreachableError, match=match):
                rpc.tracker_status(f"127.0.0.1:{srv.getsockname()[1]}", timeout=0.5)
            assert time.monotonic() - t0 < 1.0  # bounded by the timeout
            release.set()
            t.join()


def test_a_busy_port_is_refused_before_starting():
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        port = srv.getsockname()[1]
        with pytest.raises(rpc.RpcError, match=f"127.0.0.1:{port} is already in use"):
            rpc.start_tracker(port=port)


@pytest.mark.parametrize("host, warned", [("127.0.0.1", False), ("::1", False), ("localhost", False),
                                          ("0.0.0.0", True), ("10.1.2.3", True), ("phone.lan", True)])
def test_only_loopback_goes_without_a_security_warning(host, warned):
    w = rpc.security_warning(host)
    assert (w is not None) == warned
    if warned:
        assert "run code on this machine" in w


@pytest.mark.parametrize("text", ["9190", "host:", ":9190", "host:99999", "host:port"])
def test_bad_tracker_address_says_the_form(text):
    with pytest.raises(InvalidInputError, match="expected HOST:PORT, e.g. 127.0.0.1:9190"):
        rpc.parse_address(text)


def test_version_mismatch_says_what_to_install():
    e = rpc.version_error("10.0.0.2:9090", "Client protocol version mismatch with the server ...")
    assert isinstance(e, rpc.RpcError) and "install apache-tvm==" in str(e) and "10.0.0.2:9090" in str(e)


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs nvcc to compile CUDA")
def test_cuda_kernels_build_here_with_the_gpu_pipeline(tmp_path):
    runner = TvmRpcRunner(load_device("cuda-gpu"))
    lib, inputs = runner.build(conv_chain(1), tmp_path / "k.so")
    assert lib.stat().st_size > 0 and [a.shape for a in inputs] == [(1, 8, 16, 16)]


@pytest.mark.skipif(not (os.environ.get("HWLAT_CROSS_CC") or shutil.which("aarch64-linux-gnu-g++")),
                    reason="needs an aarch64 cross compiler")
def test_arm64_kernels_are_cross_built_for_aarch64(tmp_path):
    lib, _ = TvmRpcRunner(load_device("arm64-mobile")).build(conv_chain(1), tmp_path / "k.so")
    head = lib.read_bytes()[:20]
    assert head[:4] == b"\x7fELF" and int.from_bytes(head[18:20], "little") == 183  # EM_AARCH64


def test_arm64_without_a_cross_compiler_says_what_to_install(monkeypatch):
    monkeypatch.delenv("HWLAT_CROSS_CC", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(InvalidInputError, match=r"install aarch64-linux-gnu-g\+\+ .* or set HWLAT_CROSS_CC"):
        TvmRpcRunner(load_device("arm64-mobile"))


def test_cuda_failing_in_a_forked_session_says_how_to_start_the_server():
    from hwlat.runners.tvm_rpc import _hint

    seen = ("RPCError: Error caught from RPC call: CUDA Runtime Error: "
            "cudaErrorInitializationError (3): initialization error")
    assert "--no-fork" in _hint(seen) and "hwlat rpc server" in _hint(seen)
    assert _hint("Check failed: something else") == ""


def test_a_tracker_dies_with_the_process_that_started_it_even_after_kill_9(tmp_path):
    # kill -9 gives the parent no chance to stop() its tracker: the child's watchdog must end the
    # whole group, and the port must be free again
    port = free_port()
    code = ("import sys, time; from hwlat.runners import rpc; "
            f"p = rpc.start_tracker('127.0.0.1', {port}); print(p.popen.pid, flush=True); time.sleep(600)")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        group = int(parent.stdout.readline())
        assert rpc._listening("127.0.0.1", port)
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    deadline = time.monotonic() + 15
    while (rpc._group_alive(group) or rpc._listening("127.0.0.1", port)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not rpc._group_alive(group), "the tracker's group outlived its parent"
    assert not rpc._listening("127.0.0.1", port)
