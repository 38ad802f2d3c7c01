"""Time kernels and models on remote devices through a TVM RPC tracker: built here, run there.

Each kernel goes ONNX -> Relax -> the device file's pipeline -> `tvm.compile` for the device's
target, is linked here (with a cross compiler when the device has another CPU architecture),
uploaded, and timed by the Relax VM on the device with `time_evaluator`. A pool of workers, one
per server registered under the key, builds and times kernels in parallel, each worker keeping
one session for kernel after kernel (a server may start each session as a new process: seconds)
and opening a new one after a failure or once the session has run for the kernel timeout.
When a server dies mid-kernel, that kernel alone goes back to the queue for another server; a
kernel that fails on a server that is still alive is the kernel's fault and is raised.
"""

from __future__ import annotations

import os
import platform
import queue
import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import onnx

from hwlat.devices.measure import Timing, measure
from hwlat.devices.spec import DeviceSpec
from hwlat.errors import BackendError, InvalidInputError, one_line
from hwlat.runners import rpc
from hwlat.runners.base import Environment, Runner
from hwlat.runners.tvm import device_pipeline, random_inputs

DEFAULT_TRACKER = "127.0.0.1:9190"
_HOST_ARCH = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}
_BIG_CORES = 1  # TVM's thread pool affinity mode kBig: on big.LITTLE phones, the fast cores


class ServerLost(Exception):
    """The server went away (died, was killed, or the connection broke) during a kernel."""


@dataclass
class _Session:
    sess: object  # tvm.rpc.RPCSession
    server: str  # host:port
    dev: object  # the remote tvm Device
    opened: float = 0.0  # time.monotonic() when it was opened

    def close(self) -> None:
        self.sess = self.dev = None  # the connection closes when the last reference goes


class TvmRpcRunner(Runner):
    def __init__(self, spec: DeviceSpec, tracker: str | None = None, key: str | None = None, *,
                 request_timeout: float = 60.0, max_attempts: int = 3,
                 kernel_timeout: float = 600.0):
        """`tracker` HOST:PORT and `key` default to 127.0.0.1:9190 and the device's name.
        A worker waits `request_timeout` seconds for a free server; a kernel whose server dies
        is tried on at most `max_attempts` servers. A session holds kernels in turn and the
        server ends it after twice `kernel_timeout` seconds (TVM's session timeout); no kernel
        starts in a session older than `kernel_timeout`, so each has at least that long, and
        one that hangs is lost like one whose server died, and retried."""
        import tvm
        import tvm.rpc

        from hwlat.lowering.targets import resolve_target

        self.spec = spec
        self.tracker = tracker or DEFAULT_TRACKER
        rpc.parse_address(self.tracker)
        self.key = key or spec.name
        self.request_timeout = request_timeout
        self.max_attempts = max_attempts
        if not kernel_timeout > 0:
            raise InvalidInputError(f"kernel_timeout must be > 0 seconds, got {kernel_timeout!r}")
        self.kernel_timeout = float(kernel_timeout)
        self.target = resolve_target(device=spec, as_written=True)
        name = spec.pipeline or "default"
        # hwlat's pipelines: GPU targets get TVM's per-target schedules, CPU ones hwlat's kernels
        self._pipeline = device_pipeline(spec, self.target)
        self.pipeline = f"tvm-{name}"
        self._dev_type = "cpu" if self.target.kind.name == "llvm" else self.target.kind.name
        self._link = _linker(spec, self.target)
        self._tvm = tvm
        self._connect = tvm.rpc.connect
        self._build_lock = threading.Lock()
        self.lost: list[str] = []  # one line per server lost mid-kernel
        self.in_flight: dict[str, int] = {}  # server -> index of the kernel it is timing
        self.timed: Counter[str] = Counter()  # server -> kernels it timed

    def environment(self) -> Environment:
        rpc.check_key(self.tracker, self.key)
        return Environment(self._device_name, self.spec.threads,
                           {"apache-tvm": self._tvm.__version__, "target": str(self.target),
                            "rpc_key": self.key})

    @cached_property
    def _device_name(self) -> str:
        """What the remote device calls itself (a GPU's name), else the key; opening a session
        here checks tracker, key and protocol version before anything is built."""
        s = self._open(self.request_timeout)
        try:
            return str(s.dev.device_name or "") or f"rpc:{self.key}"
        except Exception:  # a CPU device has no name to give
            return f"rpc:{self.key}"
        finally:
            s.close()

    def unsupported(self, ops: set[str]) -> set[str]:
        from hwlat.lowering.custom import custom_ops

        known = custom_ops()  # custom ops with a lowering in hwlat/kernels are supported
        return {op for op in ops if "." in op and op not in known}

    def time_kernel(self, proto: onnx.ModelProto) -> Timing:
        return dict(self.time_kernels([proto]))[0]

    def time_model(self, path: str) -> Timing:
        return dict(self.time_kernels([onnx.load(path)]))[0]

    def time_kernels(self, protos: Sequence[onnx.ModelProto]) -> Iterator[tuple[int, Timing]]:
        """(index, timing) for every kernel, in the order they finish, timed in parallel by one
        worker per server under the key."""
        if not protos:
            return
        servers = len(rpc.check_key(self.tracker, self.key).servers[self.key])
        todo: queue.SimpleQueue = queue.SimpleQueue()
        results: queue.SimpleQueue = queue.SimpleQueue()
        for i in range(len(protos)):
            todo.put(i)
        stopping = threading.Event()
        workers = [threading.Thread(target=self._work, args=(protos, todo, results, stopping),
                                    daemon=True, name=f"hwlat-rpc-{n}")
                   for n in range(min(servers, len(protos)))]
        for w in workers:
            w.start()
        attempts = [0] * len(protos)
        left, alive, gone = len(protos), len(workers), ""
        try:
            while left:
                what, idx, value = results.get()
                if what == "done":
                    left -= 1
                    yield idx, value
                elif what == "lost":
                    self.lost.append(value)
                    attempts[idx] += 1
                    if attempts[idx] >= self.max_attempts:
                        raise rpc.RpcError(f"kernel {idx} lost its server {attempts[idx]} times under "
                                           f"key '{self.key}' (a kernel that crashes the server looks "
                                           f"the same; try it on cpu-tvm); last: {value}")
                    todo.put(idx)
                elif what == "gone":
                    alive, gone = alive - 1, value
                    todo.put(idx)  # for the workers still holding a server
                    if alive == 0:
                        raise rpc.RpcError(f"no server left under key '{self.key}' at {self.tracker} "
                                           f"with {left} of {len(protos)} kernels to time ({gone})")
                else:
                    raise value
        finally:
            stopping.set()
            for _ in workers:
                todo.put(None)
            for w in workers:
                w.join()

    def _work(self, protos, todo, results, stopping) -> None:
        s: _Session | None = None
        wait = self.request_timeout
        with tempfile.TemporaryDirectory(prefix="hwlat-rpc-") as tmp:
            while (idx := todo.get()) is not None and not stopping.is_set():
                try:
                    lib, inputs = self.build(protos[idx], Path(tmp) / f"kernel{idx}.so")
                    if s is not None and time.monotonic() - s.opened >= self.kernel_timeout:
                        s.close()  # less than a whole kernel timeout left in it
                        s = None
                    if s is None:
                        s = self._open(wait)
                except rpc.RpcVersionError as e:
                    results.put(("error", idx, e))
                    return
                except rpc.RpcError as e:
                    results.put(("gone", idx, str(e)))
                    return
                except Exception as e:  # a build failure: the kernel's own
                    results.put(("error", idx, e))
                    continue
                server = s.server
                self.in_flight[server] = idx
                keep = False
                try:
                    timing = self._time_remote(s, lib, inputs)
                    self.timed[server] += 1
                    results.put(("done", idx, timing))
                    wait = self.request_timeout
                    keep = True  # the next kernel in this session, while it has time left
                except ServerLost as e:
                    results.put(("lost", idx, f"server {server} lost during kernel {idx}: {e}"))
                    wait = min(5.0, self.request_timeout)  # take another only if one is free
                except Exception as e:
                    results.put(("error", idx, e))
                finally:
                    self.in_flight.pop(server, None)
                    lib.unlink(missing_ok=True)
                    if not keep:  # after a failure, a new session for the next kernel
                        s.close()
                        s = None
            if s is not None:
                s.close()

    def _open(self, timeout: float) -> _Session:
        """A session with a free server under the key: the tracker's pick, re-asked while the
        servers it names refuse (one may have died since it registered)."""
        deadline = time.monotonic() + timeout
        while True:
            host, port, match = rpc.request_server(self.tracker, self.key, max(deadline - time.monotonic(), 0.5))
            server = f"{host}:{port}"
            try:
                opened = time.monotonic()
                sess = self._connect(host, port, match, session_timeout=2 * self.kernel_timeout)
                sess.get_function("runtime.config_threadpool")(_BIG_CORES, self.spec.threads)
                return _Session(sess, server, sess.device(self._dev_type, 0), opened)
            except Exception as e:
                if "protocol version mismatch" in str(e).lower():
                    raise rpc.version_error(server, one_line(e)) from e
                if time.monotonic() > deadline:
                    raise rpc.RpcError(f"cannot open a session with {server} (key '{self.key}'): "
                                       f"{one_line(e)}") from e
                time.sleep(0.5)

    def build(self, proto: onnx.ModelProto, path: Path) -> tuple[Path, list[np.ndarray]]:
        """The kernel compiled for the device and linked into `path`, and data for its inputs."""
        from hwlat.lowering.custom import import_onnx

        inputs = random_inputs(proto)
        try:
            with self._build_lock:  # TVM's builders keep global state: one build at a time
                with self.target:  # hwlat's kernels pick their CPU or GPU schedule by it
                    mod = import_onnx(proto)
                ex = self._tvm.compile(mod, target=self.target, relax_pipeline=self._pipeline)
                ex.export_library(str(path), **self._link)
        except Exception as e:
            raise BackendError(f"TVM cannot build the model for {self.target.kind.name}", e) from e
        return path, inputs

    def _time_remote(self, s: _Session, lib: Path, inputs: list[np.ndarray]) -> Timing:
        from tvm import relax

        m = self.spec.measure
        try:
            s.sess.upload(str(lib), target=lib.name)
            vm = relax.VirtualMachine(s.sess.load_module(lib.name), s.dev)
            s.sess.remove(lib.name)  # loaded: a phone's storage need not keep it
            vm.set_input("main", *[self._tvm.runtime.tensor(a, s.dev) for a in inputs])

            def round_(n: int) -> list[float]:
                if m.warmup:
                    vm.time_evaluator("invoke_stateful", s.dev, number=1, repeat=m.warmup)("main")
                res = vm.time_evaluator("invoke_stateful", s.dev, number=1, repeat=n)("main")
                return [r * 1e3 for r in res.results]

            return measure(round_, m)
        except Exception as e:
            if time.monotonic() - s.opened >= 0.95 * 2 * self.kernel_timeout:  # its session's end
                raise ServerLost(f"timed out: the server ended the session after the kernel "
                                 f"timeout of {self.kernel_timeout:g} s") from e
            if not _alive(s):
                raise ServerLost(one_line(e)) from e
            raise BackendError(f"the kernel failed on server {s.server} (key '{self.key}')", e,
                               _hint(str(e))) from e


def _linker(spec: DeviceSpec, target) -> dict:
    """export_library's options: a cross compiler when the target's CPU is not this machine's."""
    triple = str(target.attrs.get("mtriple", "") or "")
    arch = _HOST_ARCH.get(triple.split("-")[0], triple.split("-")[0])
    if not triple or arch == _HOST_ARCH.get(platform.machine().lower(), platform.machine()):
        return {}
    cc = os.environ.get("HWLAT_CROSS_CC") or shutil.which(f"{triple}-g++")
    if not cc:
        raise InvalidInputError(
            f"device '{spec.name}' targets {triple}: no cross compiler found; install "
            f"{triple}-g++ (e.g. apt install g++-{triple}) or set HWLAT_CROSS_CC to one "
            "(for Android, the NDK's aarch64-linux-android<API>-clang++)")
    return {"cc": cc}


def _alive(s: _Session) -> bool:
    try:
        s.sess.get_function("runtime.NumThreads")()
        return True
    except Exception:
        return False


def _hint(message: str) -> str:
    """What to do about a known remote failure, else ''."""
    if "cudaErrorInitializationError" in message:
        # measured on an H200: every CUDA call of a session forked by TVM's server failed so
        return ("; the server runs each session in a forked process, where CUDA cannot start: "
                "run it as `hwlat rpc server` (sessions start afresh where a GPU is) or "
                "`python -m tvm.exec.rpc_server ... --no-fork`")
    return ""


