"""Devices over ADB: one `Device` interface (shell with exit code, push/pull/stat with progress,
properties, RAM and storage) over adb-shell TCP connections or a running adb server."""

from sdk_tools.devices.base import (Device, DeviceCommandError, DeviceInfo, DeviceOffline, DeviceStat,
                                    ShellResult)
from sdk_tools.devices.discovery import list_devices, open_device, resolve_serials
from sdk_tools.devices.server import AdbServer, ServerDevice


def __getattr__(name: str):
    # adb-shell (and asyncio) load when a TCP device is first used, not with the package.
    if name == "TcpDevice":
        from sdk_tools.devices.tcp import TcpDevice

        return TcpDevice
    raise AttributeError(name)


__all__ = ["AdbServer", "Device", "DeviceCommandError", "DeviceInfo", "DeviceOffline", "DeviceStat",
           "ServerDevice", "ShellResult", "TcpDevice", "list_devices", "open_device", "resolve_serials"]
