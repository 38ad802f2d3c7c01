"""Run, stop and query TVM's RPC tracker and servers, the device farm hwlat profiles through.

The tracker and servers are TVM's own programs (`python -m tvm.exec.rpc_tracker` / `rpc_server`)
run as subprocesses; this module never imports tvm. Each runs in its own process group, because
TVM forks helpers (a `popen_worker`, one process per session) that hold the listening port after
the parent dies: stopping one means ending its whole group. Tracker queries speak the tracker's
small JSON protocol directly, so every query is bounded by a timeout (TVM's client retries for a
minute on a refused connection and waits forever for a busy device).

An RPC server runs whatever code a client sends it (TVM's security guide): bind to loopback
unless the network is trusted; any other host gets a warning.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from hwlat.errors import HwlatError, InvalidInputError

_TRACKER_MAGIC = 0x2F271  # tvm.rpc.base.RPC_TRACKER_MAGIC
_SUCCESS, _REQUEST, _SUMMARY = 0, 4, 6  # tvm.rpc.base.TrackerCode
_MAX_MSG = 1 << 24


class RpcError(HwlatError):
    """The RPC tracker or a server could not be started, reached or used."""


class TrackerUnreachableError(RpcError):
    """Nothing answers as a TVM RPC tracker at the address given."""


class NoServerError(RpcError):
    """The tracker has no server registered under the key asked for."""


class RpcVersionError(RpcError):
    """The server's TVM speaks another RPC protocol than this one."""


def parse_address(text: str, what: str = "--tracker") -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidInputError(f"{what} '{text}': expected HOST:PORT, e.g. 127.0.0.1:9190")
    return host.strip("[]"), int(port)


def security_warning(host: str) -> str | None:
    """None for a loopback address; else what exposing an RPC endpoint there means."""
    try:
        if host == "localhost" or ipaddress.ip_address(host).is_loopback:
            return None
    except ValueError:
        pass  # a host name other than localhost: assume it is reachable from the network
    return (f"listening on {host}: anyone who can reach it can run code on this machine "
            "(an RPC server executes what clients send); use 127.0.0.1 with an SSH tunnel "
            "unless the network is trusted")


@dataclass
class Proc:
    """A tracker or server started by `start_tracker` / `start_server`; the leader of its group."""

    role: str  # "tracker" or "server"
    popen: subprocess.Popen
    host: str
    port: int | None  # where it listens; a server's is known once it has bound
    log: Path  # its stdout and stderr
    key: str = ""
    tracker: str = ""  # a server's tracker, HOST:PORT
    warning: str | None = None
    _tmp: tempfile.TemporaryDirectory | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = self.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(line.strip() for line in text[-lines:])


# Runs TVM's program in the child with a watchdog: when the process that started it is gone (even
# after kill -9, which leaves no chance to stop() it), the watchdog ends the child's whole group,
# helpers included. prctl(PR_SET_PDEATHSIG) alone would reach the child only, not its helpers.
_LAUNCHER = """
import os, runpy, signal, sys, threading, time
parent, module = int(sys.argv[1]), sys.argv[2]
def watch():
    while os.getppid() == parent:
        time.sleep(0.2)
    os.killpg(0, signal.SIGKILL)
threading.Thread(target=watch, daemon=True).start()
sys.argv = [module, *sys.argv[3:]]
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


def _spawn(role: str, args: list[str], host: str, port: int | None, **kw) -> Proc:
    tmp = tempfile.TemporaryDirectory(prefix=f"hwlat-rpc-{role}-")
    log = Path(tmp.name) / f"{role}.log"
    with open(log, "wb") as f:
        popen = subprocess.Popen([sys.executable, "-c", _LAUNCHER, str(os.getpid()),
                                  f"tvm.exec.rpc_{role}", *args],
                                 stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                                 start_new_session=True)  # its own process group: see stop()
    return Proc(role, popen, host, port, log, warning=security_warning(host), _tmp=tmp, **kw)


def start_tracker(host: str = "127.0.0.1", port: int = 9190, *, wait: bool = True,
                  timeout: float = 90.0) -> Proc:
    """Start a tracker on exactly host:port (TVM would silently move to the next free port)."""
    if _listening(host, port):
        raise RpcError(f"{host}:{port} is already in use (a tracker running? "
                       f"`hwlat rpc status --tracker {host}:{port}`); stop it or pass --port")
    proc = _spawn("tracker", ["--host", host, "--port", str(port), "--port-end", str(port + 1)],
                  host, port)
    if wait:
        wait_ready(proc, timeout)
    return proc


def start_server(tracker: str = "127.0.0.1:9190", key: str = "", host: str = "127.0.0.1",
                 port: int = 9090, *, wait: bool = True, timeout: float = 90.0,
                 fork: bool | None = None) -> Proc:
    """Start a server that registers with the tracker under `key`; it takes the first free port
    from `port` on. With wait, return once the tracker lists it.

    TVM's server runs each session in a child process, forked by default. On a machine with a
    CUDA GPU a forked session cannot use it (measured on an H200: every CUDA call in the session
    failed with cudaErrorInitializationError), so there (`fork=None`: where `nvidia-smi -L`
    lists a GPU) each session is a freshly started process instead (a second or two more per
    session)."""
    parse_address(tracker)
    if not key or any(c.isspace() or c == ":" for c in key):
        raise InvalidInputError(f"--key '{key}': give a non-empty key without spaces or ':'")
    if fork is None:
        fork = not has_cuda_gpu()
    proc = _spawn("server", ["--tracker", tracker, "--key", key, "--host", host,
                             "--port", str(port), "--port-end", str(port + 100),
                             *([] if fork else ["--no-fork"])],
                  host, None, key=key, tracker=tracker)
    if wait:
        wait_ready(proc, timeout)
    return proc


def has_cuda_gpu() -> bool:
    """Whether `nvidia-smi -L` lists a GPU here (asked without initializing CUDA in this process)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False
    try:
        listed = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return listed.returncode == 0 and "GPU" in listed.stdout


_BOUND = re.compile(r"bind to (\S+):(\d+)")


def wait_ready(proc: Proc, timeout: float = 90.0) -> None:
    """Until a tracker answers, or a server is listed by its tracker. Starting takes seconds:
    both import tvm. If it exits, the time runs out or the wait is interrupted (Ctrl-C), its
    process group is ended: RpcError, or the interruption goes on."""
    try:
        _wait_ready(proc, timeout)
    except BaseException:
        stop(proc)
        raise


def _wait_ready(proc: Proc, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.popen.poll() is not None:
            raise RpcError(f"the {proc.role} exited with code {proc.popen.returncode}: "
                           f"{proc.log_tail() or 'no output'}")
        if proc.role == "server" and proc.port is None:
            bound = _BOUND.search(proc.log.read_text(errors="replace"))
            proc.port = int(bound.group(2)) if bound else None
        try:
            if proc.role == "tracker":
                tracker_status(proc.address, timeout=2.0)
                return
            if proc.port is not None:
                status = tracker_status(proc.tracker, timeout=2.0)
                if proc.port in {p for _, p in status.servers.get(proc.key, ())}:
                    return
        except TrackerUnreachableError:
            if proc.role == "server" and time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            what = "answer" if proc.role == "tracker" else f"register with {proc.tracker}"
            raise RpcError(f"the {proc.role} did not {what} within {timeout:g} s: "
                           f"{proc.log_tail() or 'no output'}")
        time.sleep(0.25)


def stop(proc: Proc, grace: float = 5.0) -> None:
    """End the process's whole group: SIGTERM, up to `grace` seconds, then SIGKILL. RpcError if a
    process of the group survives or its port is still listened on."""
    pgid = proc.popen.pid  # a session leader's group id is its pid
    _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while _group_alive(pgid) and time.monotonic() < deadline:
        proc.popen.poll()  # reap the leader, or it stays a member of the group as a zombie
        time.sleep(0.05)
    if _group_alive(pgid):
        _signal_group(pgid, signal.SIGKILL)
    proc.popen.wait()
    deadline = time.monotonic() + 5.0
    while (_group_alive(pgid) or proc.port and _listening(proc.host, proc.port)) \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    if _group_alive(pgid):
        raise RpcError(f"the {proc.role}'s process group {pgid} survived SIGKILL")
    if proc.port and _listening(proc.host, proc.port):
        raise RpcError(f"{proc.address} is still listened on after the {proc.role} was stopped")
    if proc._tmp is not None:
        proc._tmp.cleanup()
        proc._tmp = None


def serve_forever(proc: Proc) -> None:
    """Block while the process runs; whatever ends the wait (Ctrl-C, `kill`, a closed terminal),
    end its group. RpcError, with the end of its output, if it exits by itself."""
    previous = {}
    if threading.current_thread() is threading.main_thread():  # only it may set handlers
        for sig in (signal.SIGTERM, signal.SIGHUP):  # by default they end Python without cleanup
            previous[sig] = signal.signal(sig, _exit_on_signal)
    try:
        code = proc.popen.wait()
        tail = proc.log_tail()
    finally:
        try:
            stop(proc)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    raise RpcError(f"the {proc.role} exited with code {code}: {tail or 'no output'}")


def _exit_on_signal(signum, frame):
    raise SystemExit(128 + signum)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _group_alive(pgid: int) -> bool:
    """Whether a process of the group still runs: members the leader orphaned are reaped by
    init, which in a container may never happen, so zombies do not count."""
    import psutil  # in apache-tvm's rpc extra, like the tracker itself

    for p in psutil.process_iter(["status"]):
        try:
            if os.getpgid(p.pid) == pgid and p.info["status"] != psutil.STATUS_ZOMBIE:
                return True
        except (ProcessLookupError, psutil.Error):
            continue
    return False


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


@dataclass(frozen=True)
class TrackerStatus:
    address: str
    servers: dict[str, tuple[tuple[str, int], ...]]  # key -> (host, port) of each server
    queue: dict[str, tuple[int, int]]  # key -> (free servers, pending requests)

    def keys(self) -> list[str]:
        return sorted(set(self.servers) | set(self.queue))


def tracker_status(tracker: str = "127.0.0.1:9190", timeout: float = 5.0) -> TrackerStatus:
    """The servers registered with a tracker and its queue, per key; at most `timeout` seconds."""
    with _tracker_conn(tracker, timeout) as sock:
        reply = _call(sock, tracker, [_SUMMARY])
    if not (isinstance(reply, list) and len(reply) == 2 and reply[0] == _SUCCESS):
        raise TrackerUnreachableError(f"tracker {tracker} sent an unexpected summary {reply!r:.100}")
    servers: dict[str, list[tuple[str, int]]] = {}
    for info in reply[1].get("server_info", []):
        key = info.get("key", "").removeprefix("server:")
        host, port = info.get("addr", [None, None])
        servers.setdefault(key, []).append((host, port))
    queue = {k: (q.get("free", 0), q.get("pending", 0)) for k, q in reply[1].get("queue_info", {}).items()}
    return TrackerStatus(tracker, {k: tuple(sorted(v)) for k, v in servers.items()}, queue)


def check_key(tracker: str, key: str, timeout: float = 5.0) -> TrackerStatus:
    """The tracker's status; NoServerError naming the keys it has if none is registered under key."""
    status = tracker_status(tracker, timeout)
    if not status.servers.get(key):
        have = ", ".join(f"{k} ({len(v)})" for k, v in sorted(status.servers.items())) or "none"
        raise NoServerError(f"tracker {tracker} has no server under key '{key}' (servers by key: {have}); "
                            f"start one with `hwlat rpc server --tracker {tracker} --key {key}`")
    return status


def request_server(tracker: str, key: str, timeout: float) -> tuple[str, int, str]:
    """Ask the tracker for a free server under key: (host, port, match key) to connect with.
    RpcError if none is free within `timeout` seconds."""
    with _tracker_conn(tracker, timeout) as sock:
        try:
            reply = _call(sock, tracker, [_REQUEST, key, "", 1])
        except TrackerUnreachableError as e:
            if isinstance(e.__cause__, TimeoutError):
                raise RpcError(f"no server under key '{key}' came free at {tracker} within "
                               f"{timeout:g} s; see `hwlat rpc status --tracker {tracker}`") from None
            raise
    if not (isinstance(reply, list) and len(reply) == 2 and reply[0] == _SUCCESS):
        raise RpcError(f"tracker {tracker} refused a request for key '{key}': {reply!r:.100}")
    host, port, match = reply[1]
    return host, int(port), match


def version_error(server: str, detail: str) -> RpcVersionError:
    from importlib import metadata

    try:
        mine = metadata.version("apache-tvm")
    except metadata.PackageNotFoundError:
        mine = "the version installed here"
    return RpcVersionError(f"server {server} runs another TVM RPC protocol ({detail.strip()[:160]}); "
                           f"install apache-tvm=={mine} there and restart the server")


@contextmanager
def _tracker_conn(tracker: str, timeout: float) -> Iterator[socket.socket]:
    host, port = parse_address(tracker)
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as e:
        raise TrackerUnreachableError(
            f"no RPC tracker answers at {tracker} ({e.strerror or e}); start one with "
            f"`hwlat rpc tracker --host {host} --port {port}` or pass --tracker HOST:PORT") from e
    with sock:
        try:
            sock.sendall(struct.pack("<i", _TRACKER_MAGIC))
            magic = struct.unpack("<i", _recv(sock, 4))[0]
        except OSError as e:
            raise TrackerUnreachableError(f"{tracker} accepted a connection but did not answer as "
                                          f"a TVM RPC tracker ({e}); check the address") from e
        if magic != _TRACKER_MAGIC:
            raise TrackerUnreachableError(
                f"{tracker} is not a TVM RPC tracker (or one of an incompatible TVM version): it "
                f"answered {magic:#x}; check the address, or the tracker's apache-tvm version")
        yield sock


def _call(sock: socket.socket, tracker: str, message: list):
    data = json.dumps(message).encode()
    try:
        sock.sendall(struct.pack("<i", len(data)) + data)
        size = struct.unpack("<i", _recv(sock, 4))[0]
        if not 0 < size <= _MAX_MSG:
            raise OSError(f"bad message size {size}")
        return json.loads(_recv(sock, size))
    except (OSError, ValueError) as e:
        raise TrackerUnreachableError(f"tracker {tracker} stopped answering ({e or 'timed out'})") from e


def _recv(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise OSError("connection closed")
        buf += chunk
    return buf
