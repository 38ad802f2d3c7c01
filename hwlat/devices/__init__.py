"""Devices: declarative descriptions (TOML) of what hwlat profiles and predicts for.

A leaf of hwlat: every layer reads these descriptions, and this package imports nothing of
hwlat but its errors (the runners that time kernels on a device are in `hwlat.runners`)."""

from hwlat.devices.spec import (
    DeviceSpec,
    MeasureSpec,
    find_device,
    list_devices,
    load_device,
    table_only_device,
)

__all__ = ["DeviceSpec", "MeasureSpec", "find_device", "list_devices", "load_device",
           "table_only_device"]
