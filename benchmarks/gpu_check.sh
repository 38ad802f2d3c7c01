#!/usr/bin/env bash
# Profile the zoo on the cuda-gpu device and check the table's predictions against whole-model
# measurements on the same GPU.
#
# cuda-gpu builds each kernel here for TVM's CUDA target and times it through an RPC server;
# this script runs a tracker on 127.0.0.1:9190 (the runner's default) and one server under the
# key cuda-gpu, both on loopback, and ends their process groups on exit. It prints the GPU,
# every model's predicted / measured latency and their error, with the roofline-h100 estimate
# beside them, and fails when the mean absolute error is over MAX_MAPE percent.
#
#   benchmarks/gpu_check.sh                        # the whole zoo. exit 0: checked;
#   benchmarks/gpu_check.sh mobilenet_v2 resnet18  # these zoo models only. 1: over MAX_MAPE or a
#   MAX_MAPE=30 benchmarks/gpu_check.sh            # step failed; 77: no GPU here, nothing checked
#
# Environment: PYTHON (default .venv/bin/python, else python3), HWLAT_HOME (default: a fresh
# temporary folder, so the table starts empty), MAX_MAPE (default 50).
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
MAX_MAPE=${MAX_MAPE:-50}
PORT=9190

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "gpu_check: no NVIDIA GPU here (nvidia-smi is missing or lists none); nothing checked." >&2
    echo "gpu_check: run it on a machine with a CUDA GPU; the roofline-h100 device needs none." >&2
    exit 77
fi
if ! "$PYTHON" -c "import tvm, sys; sys.exit(0 if tvm.cuda(0).exist else 1)" 2>/dev/null; then
    echo "gpu_check: nvidia-smi sees a GPU but TVM does not (apache-tvm without CUDA, or no driver);" \
         "check: $PYTHON -c 'import tvm; print(tvm.cuda(0).exist)'" >&2
    exit 1
fi
if "$PYTHON" -c "import socket, sys; sys.exit(socket.socket().connect_ex(('127.0.0.1', $PORT)) != 0)"; then
    echo "gpu_check: 127.0.0.1:$PORT is in use; stop what holds it (hwlat rpc status --tracker 127.0.0.1:$PORT)" >&2
    exit 1
fi

export HWLAT_HOME=${HWLAT_HOME:-$(mktemp -d -t hwlat-gpu-check-XXXXXX)}
TABLE=$HWLAT_HOME/gpu-check.sqlite
echo "gpu_check: $(nvidia-smi -L | head -1); table $TABLE"

# tracker and server in one background process: on SIGTERM it ends both process groups
"$PYTHON" - "$PORT" <<'EOF' &
import signal, sys
from hwlat.runners import rpc

signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # end the groups even while starting
tracker = rpc.start_tracker(port=int(sys.argv[1]), timeout=300)
try:
    rpc.serve_forever(rpc.start_server(tracker.address, key="cuda-gpu", timeout=300))
finally:
    rpc.stop(tracker)
EOF
FARM=$!
trap 'kill -TERM $FARM 2>/dev/null; wait $FARM 2>/dev/null || true' EXIT

"$PYTHON" - "$PORT" "$FARM" <<'EOF'
import os, sys, time
from hwlat.runners import rpc

deadline = time.monotonic() + 300
while True:
    try:
        rpc.check_key(f"127.0.0.1:{sys.argv[1]}", "cuda-gpu", timeout=2)
        break
    except rpc.RpcError as e:
        try:
            os.kill(int(sys.argv[2]), 0)
        except ProcessLookupError:
            sys.exit(f"gpu_check: the RPC tracker or server failed to start: {e}")
        if time.monotonic() > deadline:
            sys.exit(f"gpu_check: the RPC server did not register within 300 s: {e}")
        time.sleep(1)
EOF

if [ $# -eq 0 ]; then
    "$PYTHON" -m hwlat.cli profile --zoo --device cuda-gpu --table "$TABLE"
    "$PYTHON" -m hwlat.cli profile --zoo --device roofline-h100 --table "$TABLE"
else  # the named zoo models, exported where --zoo puts them
    mapfile -t NAMED < <("$PYTHON" - "$@" <<'EOF'
import sys
from hwlat import zoo
from hwlat.paths import home
from hwlat.onnx_export import export

unknown = [n for n in sys.argv[1:] if n not in zoo.MODELS]
if unknown:
    sys.exit(f"gpu_check: not a zoo model: {', '.join(unknown)} (known: {', '.join(zoo.MODELS)})")
(home() / "zoo").mkdir(parents=True, exist_ok=True)
for name in sys.argv[1:]:
    path = home() / "zoo" / f"{name}.onnx"
    export(*zoo.build(name), path, compare=False)
    print(path)
EOF
)
    [ ${#NAMED[@]} -eq $# ] || exit 1
    "$PYTHON" -m hwlat.cli profile "${NAMED[@]}" --device cuda-gpu --table "$TABLE"
    "$PYTHON" -m hwlat.cli profile "${NAMED[@]}" --device roofline-h100 --table "$TABLE"
fi

# the profiled zoo models cuda-gpu can run (the named ones, else all that --zoo exported)
mapfile -t MODELS < <("$PYTHON" - ${NAMED[@]+"${NAMED[@]}"} <<'EOF'
import sys
from pathlib import Path
from hwlat.devices import load_device
from hwlat.graph import fuse, load
from hwlat.lut import default_table_path
from hwlat.runners import get_runner

runner = get_runner(load_device("cuda-gpu"))
named = [Path(a) for a in sys.argv[1:]]
for p in named or sorted((default_table_path().parent / "zoo").glob("*.onnx")):
    if not runner.unsupported({op for k in fuse(load(p)) for op in k.key.ops}):
        print(p)
EOF
)
"$PYTHON" -m hwlat.cli validate "${MODELS[@]}" --device cuda-gpu --table "$TABLE" --json > "$HWLAT_HOME/validate.json"

"$PYTHON" - "$HWLAT_HOME/validate.json" "$TABLE" "$MAX_MAPE" <<'EOF'
import json, sys
from pathlib import Path
from hwlat.graph import fuse, load
from hwlat.lut import TableStore
from hwlat.lut.predict import predict

report = json.loads(Path(sys.argv[1]).read_text())
with TableStore(Path(sys.argv[2]), readonly=True) as store:
    print(f"{'model':<20} {'predicted ms':>12} {'measured ms':>12} {'error':>8} {'roofline ms':>12}")
    errors = []
    for r in report["models"]:
        g = load(r["model"])
        roof = predict(g, fuse(g), store, "roofline-h100", correct=False).latency_ms
        errors.append(abs(r["error"]))
        print(f"{Path(r['model']).stem:<20} {r['predicted_ms']:>12.4f} {r['measured_ms']:>12.4f} "
              f"{r['error']:>+8.1%} {roof:>12.4f}")
mape = 100 * sum(errors) / len(errors)
print(f"mean absolute error {mape:.1f} % over {len(errors)} models (limit {sys.argv[3]} %)")
sys.exit(0 if mape <= float(sys.argv[3]) else 1)
EOF
