"""Devices: declarative descriptions (TOML) and the runners that time kernels and models."""

from hwlat.devices.spec import DeviceSpec, MeasureSpec, list_devices, load_device

__all__ = ["DeviceSpec", "MeasureSpec", "list_devices", "load_device"]
