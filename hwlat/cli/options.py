"""Options and helpers the command modules share: the table file, the device, RPC."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

TableOpt = Annotated[Path | None, typer.Option("--table", help="table file (default $HWLAT_HOME/tables.sqlite)")]
DeviceOpt = Annotated[str, typer.Option("--device", "-d", help="device name (see `hwlat devices`)")]
RpcOpt = Annotated[str | None, typer.Option("--rpc", help="RPC tracker HOST:PORT, for devices timed over RPC (default 127.0.0.1:9190)")]
KeyOpt = Annotated[str | None, typer.Option("--key", help="RPC key the device's servers registered under (default: the device name)")]


def open_table(path: Path | None, *, readonly: bool):
    from hwlat.lut import TableStore, default_table_path

    return TableStore(path or default_table_path(), readonly=readonly)



