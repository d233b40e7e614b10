"""Which devices are reachable and how to open one: the adb server's devices, plus TCP serials
given on the command line, in $GEMMA4_MOBILE_DEVICES, remembered from earlier use, or started with
`gemma4-mobile emulator start`. A serial the server knows goes through the server; another
HOST:PORT serial is reached directly with adb-shell."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable

from gemma4_common.config import env, state_dir
from gemma4_common.fsutil import atomic_write_text, read_json
from gemma4_common.errors import UserError
from sdk_tools.devices.base import Device, DeviceInfo
from sdk_tools.devices.server import AdbServer, ServerDevice, ServerDeviceEntry


def is_tcp_serial(serial: str) -> bool:
    host, sep, port = serial.rpartition(":")
    return bool(sep and host and port.isdigit())


def TcpDevice(serial: str, **kw) -> Device:  # noqa: N802 - the class, imported when first needed
    """adb-shell (and its asyncio) load only when a TCP device is opened: a command through the adb
    server, or one that finds nothing to do, starts faster."""
    from sdk_tools.devices.tcp import TcpDevice as cls

    return cls(serial, **kw)

PROBE_TIMEOUT_S = 3.0
APP_DIR = "/data/local/tmp"


def _remembered_file() -> Path:
    return state_dir() / "devices.json"


def write_state_text(path: Path, text: str) -> None:
    """Replace a file of the state directory that is a convenience (remembered serials, the host
    hash cache): never half-written, but not fsynced; losing it to a crash costs a re-hash or a
    `--device` flag."""
    atomic_write_text(path, text, durable=False)


def remembered_serials() -> list[str]:
    data = read_json(_remembered_file(), missing={}, broken={})  # a convenience: a broken file is forgotten
    tcp = data.get("tcp") if isinstance(data, dict) else None
    return [s for s in tcp if isinstance(s, str)] if isinstance(tcp, list) else []


def remember_serial(serial: str) -> None:
    serials = remembered_serials()
    if serial in serials:
        return
    try:
        write_state_text(_remembered_file(), json.dumps({"tcp": [*serials, serial][-32:]}, indent=2) + "\n")
    except OSError:
        pass  # remembering is a convenience only


def forget_serial(serial: str) -> None:
    serials = [s for s in remembered_serials() if s != serial]
    try:
        write_state_text(_remembered_file(), json.dumps({"tcp": serials}, indent=2) + "\n")
    except OSError:
        pass


def _started_emulators() -> list[str]:
    # Emulators started with `gemma4-mobile emulator start` are TCP devices the user asked for.
    try:
        from on_device.emulator import manager

        return [r.serial for r in manager.list_emulators() if r.alive]
    except Exception:
        return []


def _env_serials() -> list[str]:
    return [s.strip() for s in (env("DEVICES") or "").split(",") if s.strip()]


def candidate_tcp_serials(extra: Iterable[str] = ()) -> list[str]:
    seen: dict[str, None] = {}
    for s in [*extra, *_env_serials(), *remembered_serials(), *_started_emulators()]:
        if is_tcp_serial(s):
            seen.setdefault(s, None)
    return list(seen)


def _server_entries(server: AdbServer) -> list[ServerDeviceEntry]:
    try:
        return server.devices()
    except OSError:
        return []  # no adb server running: only TCP devices


def _info(dev: Device) -> DeviceInfo:
    info = dev.info()
    try:
        info.storage_free_bytes = dev.free_bytes(APP_DIR)
    except UserError:
        pass
    return info


def _probe_tcp(serial: str) -> DeviceInfo:
    try:
        dev = TcpDevice(serial, connect_timeout_s=PROBE_TIMEOUT_S, auth_timeout_s=PROBE_TIMEOUT_S)
    except UserError as e:
        if "refused" in e.problem.lower() and serial in remembered_serials():
            forget_serial(serial)  # nothing listens there any more (e.g. an emulator that was stopped)
        return DeviceInfo(serial=serial, transport="tcp", state="offline", error=e.one_line())
    with dev:
        try:
            return _info(dev)
        except UserError as e:
            return DeviceInfo(serial=serial, transport="tcp", state="offline", error=e.one_line())


def _probe_server(server: AdbServer, entry: ServerDeviceEntry) -> DeviceInfo:
    if entry.state != "device":
        return DeviceInfo(serial=entry.serial, transport="adb-server", state=entry.state,
                          model=entry.attrs.get("model", ""), device=entry.attrs.get("device", ""),
                          error=_state_hint(entry.state))
    try:
        return _info(ServerDevice(entry.serial, server))
    except UserError as e:
        return DeviceInfo(serial=entry.serial, transport="adb-server", state="offline", error=e.one_line())


def _state_hint(state: str) -> str:
    if state == "unauthorized":
        return ("the device has not authorized the adb server's key: accept the 'Allow debugging?' prompt on "
                "the device, or add the key (~/.android/adbkey.pub) to the device's authorized keys "
                "(the reference emulator's --authorized-keys file), then run again")
    if state.startswith("no permissions"):
        return "the USB device is not accessible to this user (udev rules)"
    return f"device state is {state}"


def list_devices(tcp_serials: Iterable[str] = (), server: AdbServer | None = None,
                 include_offline: bool = True) -> list[DeviceInfo]:
    """Every device reachable now, with its model, SoC, RAM, Android version, ABI and free storage."""
    server = server or AdbServer()
    entries = _server_entries(server)
    known = {e.serial for e in entries}
    tcp = [s for s in candidate_tcp_serials(tcp_serials) if s not in known]
    jobs = [(lambda e=e: _probe_server(server, e)) for e in entries] + [(lambda s=s: _probe_tcp(s)) for s in tcp]
    if not jobs:
        return []
    with ThreadPoolExecutor(max_workers=min(8, len(jobs))) as pool:
        infos = list(pool.map(lambda f: f(), jobs))
    if not include_offline:
        infos = [i for i in infos if i.state == "device"]
    return infos


def _reachable_text(infos: list[DeviceInfo]) -> str:
    online = [f"{i.serial} ({i.model or '?'})" for i in infos if i.state == "device"]
    return ", ".join(online) if online else "none"


def open_device(serial: str, server: AdbServer | None = None) -> Device:
    """The Device for a serial: through the adb server when it lists it, else directly over TCP.

    Unknown serials raise UserError naming the devices that are reachable.
    """
    serial = serial.strip()
    server = server or AdbServer()
    entries = _server_entries(server)
    entry = next((e for e in entries if e.serial == serial), None)
    if entry is not None:
        if entry.state != "device":
            raise UserError(f"device {serial} is {entry.state}", _state_hint(entry.state))
        return ServerDevice(serial, server)
    if is_tcp_serial(serial):
        try:
            dev = TcpDevice(serial)
        except UserError as e:
            others = [i for i in list_devices(server=server) if i.serial != serial]
            raise UserError(f"{e.problem}; reachable devices: {_reachable_text(others)}", e.fix) from None
        remember_serial(serial)
        return dev
    infos = list_devices(server=server)
    raise UserError(f"no device with serial {serial!r}; reachable devices: {_reachable_text(infos)}",
                    "plug the phone in with USB debugging on, or pass HOST:PORT for a device over TCP; "
                    "see `gemma4-mobile devices`")


def resolve_serials(spec: str | Iterable[str], server: AdbServer | None = None) -> list[str]:
    """`--device` values: comma-separated serials, or `all` for every online device."""
    items = [spec] if isinstance(spec, str) else list(spec)
    serials: list[str] = []
    for item in items:
        for s in str(item).split(","):
            s = s.strip()
            if not s:
                continue
            if s == "all":
                online = [i.serial for i in list_devices(server=server) if i.state == "device"]
                if not online:
                    raise UserError("--device all: no device is reachable",
                                    "connect a phone with USB debugging on, or start one with "
                                    "`gemma4-mobile emulator start`")
                serials += online
            else:
                serials.append(s)
    out = list(dict.fromkeys(serials))
    if not out:
        raise UserError("no device given", "pass --device SERIAL (see `gemma4-mobile devices`), a list a,b or all")
    return out
