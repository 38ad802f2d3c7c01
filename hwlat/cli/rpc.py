"""TVM RPC commands: `hwlat rpc tracker`, `hwlat rpc server`, `hwlat rpc status`."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from hwlat.cli.render import err, out

rpc_app = typer.Typer(help="Run and query the TVM RPC tracker and servers that remote devices are timed through.",
                      no_args_is_help=True)
HostOpt = Annotated[str, typer.Option(help="address to listen on; any but loopback lets anyone who reaches it register servers or run code here (no authentication; see the README for an SSH tunnel)")]


@rpc_app.command("tracker")
def rpc_tracker(
    host: HostOpt = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="port to listen on")] = 9190,
) -> None:
    """Run a TVM RPC tracker in the foreground; Ctrl-C stops it and everything it started."""
    from hwlat.runners import rpc

    proc = _start_rpc(host, "tracker", lambda: rpc.start_tracker(host, port))
    out.print(f"tracker on {proc.address}; add servers with `hwlat rpc server --tracker {proc.address} "
              f"--key DEVICE`; Ctrl-C stops it", highlight=False, markup=False)
    rpc.serve_forever(proc)


@rpc_app.command("server")
def rpc_server(
    tracker: Annotated[str, typer.Option("--tracker", help="tracker to register with, HOST:PORT")],
    key: Annotated[str, typer.Option("--key", help="key clients ask the tracker for: the device's name")],
    host: HostOpt = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65435, help="first port to try (up to 100 more)")] = 9090,
) -> None:
    """Run a TVM RPC server registered with a tracker, in the foreground; Ctrl-C stops it."""
    from hwlat.runners import rpc

    proc = _start_rpc(host, "server", lambda: rpc.start_server(tracker, key, host, port))
    fresh = "; each session a new process (a CUDA GPU is here)" if "--no-fork" in proc.popen.args else ""
    out.print(f"server on {proc.address}, registered with {tracker} under key '{key}'{fresh}; "
              "Ctrl-C stops it", highlight=False, markup=False)
    rpc.serve_forever(proc)


def _start_rpc(host: str, role: str, start):
    from hwlat.runners import rpc

    warning = rpc.security_warning(host)
    if warning:
        err.print(f"warning: {warning}", highlight=False, markup=False)
    with err.status(f"starting the {role} (it imports TVM: seconds) ..."):
        return start()


@rpc_app.command("status")
def rpc_status(
    tracker: Annotated[str, typer.Option("--tracker", help="tracker, HOST:PORT")] = "127.0.0.1:9190",
    as_json: Annotated[bool, typer.Option("--json", metavar="", help="print JSON")] = False,
) -> None:
    """Show the servers registered with a tracker and its queue, per key."""
    from hwlat.runners import rpc

    status = rpc.tracker_status(tracker, timeout=5.0)
    rows = [{"key": k, "servers": [f"{h}:{p}" for h, p in status.servers.get(k, ())],
             "free": status.queue.get(k, (0, 0))[0], "waiting": status.queue.get(k, (0, 0))[1]}
            for k in status.keys()]
    if as_json:
        print(json.dumps({"tracker": tracker, "keys": rows}, indent=1))
        return
    t = Table("key", "servers", "free", "waiting", "addresses", title=f"RPC tracker {tracker}")
    for r in rows:
        t.add_row(r["key"], str(len(r["servers"])), str(r["free"]), str(r["waiting"]), " ".join(r["servers"]))
    out.print(t)
    if not rows:
        out.print(f"no servers yet: `hwlat rpc server --tracker {tracker} --key DEVICE`", highlight=False, markup=False)

