"""Options and helpers the command modules share: the table file, the device, RPC."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hwlat.errors import InvalidInputError

TableOpt = Annotated[Path | None, typer.Option("--table", help="table file (default $HWLAT_HOME/tables.sqlite)")]
DeviceOpt = Annotated[str, typer.Option("--device", "-d", help="device name (see `hwlat devices`)")]
RpcOpt = Annotated[str | None, typer.Option("--rpc", help="RPC tracker HOST:PORT, for devices timed over RPC (default 127.0.0.1:9190)")]
KeyOpt = Annotated[str | None, typer.Option("--key", help="RPC key the device's servers registered under (default: the device name)")]


def open_table(path: Path | None, *, readonly: bool):
    from hwlat.lut import TableStore, default_table_path

    return TableStore(path or default_table_path(), readonly=readonly)


def runner_for(spec, tracker: str | None, key: str | None):
    if tracker is None and key is None:
        return spec.make_runner()
    if not spec.timed_over_rpc:
        from hwlat.devices import list_devices

        remote = ", ".join(d.name for d in list_devices() if d.timed_over_rpc)
        raise InvalidInputError(f"device '{spec.name}' is not timed over RPC; --rpc and --key apply to {remote}")
    return spec.make_runner(tracker=tracker, key=key)

