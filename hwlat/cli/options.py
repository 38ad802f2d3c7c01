"""Options and helpers the command modules share: the table file, the device, RPC, --json."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hwlat.errors import InvalidInputError

_file_devices: list[str] = []  # names of the --device-file devices of this command


def _device_file(value: Path | None) -> Path | None:
    """--device-file: read and validate the file before --device is looked at (eager)."""
    from hwlat.devices.spec import add_device_file

    if value is not None:
        _file_devices.append(add_device_file(value).name)
    return value


def _device(ctx: typer.Context, param: typer.CallbackParam, value: str) -> str:
    """--device left out with --device-file given: the file's device."""
    source = ctx.get_parameter_source(param.name)  # typer's own click: compared by name
    if _file_devices and getattr(source, "name", None) == "DEFAULT":
        return _file_devices[-1]
    return value


def reset() -> None:
    """Forget the --device-file devices of an earlier command (the CLI run in process)."""
    from hwlat.devices.spec import clear_device_files

    _file_devices.clear()
    clear_device_files()


TableOpt = Annotated[Path | None, typer.Option("--table", help="table file (default $HWLAT_HOME/tables.sqlite)")]
DeviceOpt = Annotated[str, typer.Option("--device", "-d", callback=_device,
                                        help="device name (see `hwlat devices`)")]
DeviceFileOpt = Annotated[Path | None, typer.Option(
    "--device-file", is_eager=True, callback=_device_file,
    help="a device file (TOML, as hwlat/devices/*.toml) to use beside the known ones; "
         "--device defaults to its device")]
# one name for a tracker address everywhere: --tracker (--rpc kept as a hidden alias)
TrackerOpt = Annotated[str | None, typer.Option(
    "--tracker", help="RPC tracker HOST:PORT, for devices timed over RPC (default 127.0.0.1:9190)")]
RpcAliasOpt = Annotated[str | None, typer.Option("--rpc", hidden=True, help="old name of --tracker")]
KeyOpt = Annotated[str | None, typer.Option("--key", help="RPC key the device's servers registered under (default: the device name)")]
JsonOpt = Annotated[bool, typer.Option("--json", metavar="", help="print JSON")]


def open_table(path: Path | None, *, readonly: bool):
    from hwlat.lut import TableStore, default_table_path

    return TableStore(path or default_table_path(), readonly=readonly)


def table_devices(path: Path | None) -> list[tuple[str, int]]:
    """(device, entries) of the table; none when there is no table yet."""
    from hwlat.lut import default_table_path

    path = path or default_table_path()
    if not Path(path).exists():
        return []
    with open_table(path, readonly=True) as store:
        return store.devices()


def query_device(name: str, table: Path | None):
    """The device to answer a query for: its file, else a device the table holds entries of
    (made by `lut fit` or `lut import`)."""
    from hwlat.devices import find_device, load_device, table_only_device

    spec = find_device(name)
    if spec is not None:
        return spec
    if any(d == name for d, _ in table_devices(table)):
        return table_only_device(name)
    return load_device(name)  # unknown: says which devices exist


def measured_device(name: str, table: Path | None = None):
    """The device to measure on: it needs a file that says how to time it."""
    from hwlat.devices import find_device, load_device

    spec = find_device(name)
    if spec is not None:
        return spec
    if any(d == name for d, _ in table_devices(table)):
        raise InvalidInputError(
            f"device '{name}' lives only in the table (made by `lut fit` or `lut import`): it "
            f"answers predict, search and nas predict but cannot be measured; to time kernels on "
            f"it, describe it in a device file (--device-file PATH)")
    return load_device(name)
