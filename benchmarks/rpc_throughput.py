"""Kernels timed per second through an RPC server on loopback: forked sessions (TVM's default)
vs sessions started afresh (`--no-fork`, what servers on a machine with a CUDA GPU run).

    .venv/bin/python benchmarks/rpc_throughput.py [--kernels 12]

Starts a tracker and one server of each kind on 127.0.0.1 (free ports), times the same
--kernels distinct small convs through each (one server: one worker, kernels in turn, each
built here, uploaded, loaded and timed there with the cpu-tvm measure settings cut to 2 warm-up
and 5 timed runs), and prints the wall time per kernel. The servers share this machine's cores
with the client: compare the two lines, not the absolute seconds.
"""

from __future__ import annotations

import argparse
import socket
import time

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from hwlat.devices.spec import DeviceSpec, MeasureSpec
from hwlat.runners import rpc
from hwlat.runners.tvm_rpc import TvmRpcRunner


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def conv(i: int):
    """A 1x1 conv with 8 + i output channels: distinct kernels."""
    rng = np.random.default_rng(i)
    w = numpy_helper.from_array(rng.standard_normal((8 + i, 8, 1, 1)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"])], f"conv{i}",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8 + i, 16, 16])], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kernels", type=int, default=12)
    args = ap.parse_args()
    protos = [conv(i) for i in range(args.kernels)]
    spec = DeviceSpec(name="loop", description="loopback", runtime="tvm",
                      runner="hwlat.runners.tvm_rpc:TvmRpcRunner", threads=1,
                      pipeline="default", target={"kind": "llvm", "mcpu": "host"},
                      measure=MeasureSpec(warmup=2, repeats=5, max_cv=1.0, max_rounds=1))
    tracker = rpc.start_tracker(port=free_port())
    try:
        for fork in (True, False):
            key = "fork" if fork else "no-fork"
            server = rpc.start_server(tracker.address, key=key, port=free_port(), fork=fork)
            try:
                runner = TvmRpcRunner(spec, tracker=tracker.address, key=key)
                t0 = time.perf_counter()
                got = dict(runner.time_kernels(protos))
                wall = time.perf_counter() - t0
                assert sorted(got) == list(range(len(protos)))
                print(f"{key:8s} {len(protos)} kernels in {wall:6.1f} s: {wall / len(protos):.2f} s a kernel")
            finally:
                rpc.stop(server)
    finally:
        rpc.stop(tracker)


if __name__ == "__main__":
    main()
