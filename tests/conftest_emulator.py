"""Emulator fixtures, loaded by tests/conftest.py (`pytest_plugins`). The helpers they use, and
that tests use directly, are in support/emulator.py.

- `emulator`: one in-process reference emulator (galaxy-s24) for the test session; `.serial`,
  `.port`, `.fs.root`, `.device.props`. Every emulator runs Android's userland (mksh + toybox) in
  bubblewrap; where that cannot run, the fixtures fail with the one-line error naming the fix.
- `device`: a TcpDevice (sdk_tools' Device over adb-shell) connected to the session emulator,
  closed at the end of the test.
- `emulator_factory(**kw)`: a fresh emulator per call (profile=, auth=, authorized_keys=,
  accept_new_keys=, storage_bytes=, runner=), stopped at the end of the test.
- `adb`: Debian's real adb on a private server port with its own HOME; `adb.run(*args)`,
  `adb.connect(serial)`, `adb.env`; its server is killed at the end of the session.
- `adb_serial`: the session emulator, connected through the real adb server.
- `adb_shell_device`: an adb-shell AdbDeviceTcp connected to the session emulator.
- `managed_emulator(**kw)`: a factory starting emulators as background processes through the
  manager (as `gemma4-mobile emulator start` does; kw as `manager.start`), with GEMMA4_MOBILE_HOME
  in a temp dir; returns an EmulatorRecord (.serial, .port, .pid, .root) and stops them at the end.
- `runner_file`: the emulator's runner binary in tmp_path, to pass as `--runner` / `runner=`.
- `isolated_adb_key`: ANDROID_USER_HOME in a session temp dir (the adb key stays out of ~/.android);
  `isolated_device_env`: that, plus GEMMA4_MOBILE_HOME in tmp_path and no GEMMA4_MOBILE_DEVICES. Test modules
  that talk to devices use one with `pytestmark = pytest.mark.usefixtures(...)`.

The in-process emulators call `on_device.runner.run_runner` when the shell executes a runner file;
pass `runner=` to `emulator_factory` to use another callable.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from on_device.emulator import EmulatorServer
from on_device.emulator.server import free_port
from support.emulator import ADB, AdbClient, adb_shell_client, make_emulator


@pytest.fixture
def runner_file(tmp_path) -> Path:
    """The emulator's runner file (what `litert_lm_main` is on a phone), executable, in tmp_path."""
    from on_device.runner_contract import RUNNER_NAME, emulator_runner_bytes

    p = tmp_path / RUNNER_NAME
    p.write_bytes(emulator_runner_bytes())
    p.chmod(0o755)
    return p


@pytest.fixture(scope="session")
def adb_user_home(tmp_path_factory) -> Path:
    """One ANDROID_USER_HOME for the session, so the adb key is made once and never in ~/.android."""
    return tmp_path_factory.mktemp("android-user-home")


@pytest.fixture
def isolated_adb_key(adb_user_home, monkeypatch):
    """Keep the adb key (created on first use) out of the user's ~/.android."""
    monkeypatch.setenv("ANDROID_USER_HOME", str(adb_user_home))


@pytest.fixture
def isolated_device_env(isolated_adb_key, tmp_path, monkeypatch):
    """The adb key as above, a fresh GEMMA4_MOBILE_HOME, and no remembered serials from the user."""
    monkeypatch.setenv("GEMMA4_MOBILE_HOME", str(tmp_path / "g4m-home"))
    monkeypatch.delenv("GEMMA4_MOBILE_DEVICES", raising=False)
    monkeypatch.delenv("GEMMA4_MOBILE_PUSH_SYNC", raising=False)


@pytest.fixture(scope="session")
def emulator(tmp_path_factory):
    server = make_emulator(tmp_path_factory.mktemp("emulator-root"))
    yield server
    server.stop()


@pytest.fixture
def device(emulator, isolated_adb_key):
    """A Device connected to the session emulator (over adb-shell TCP), closed after the test."""
    from sdk_tools.devices.tcp import TcpDevice

    with TcpDevice(emulator.serial) as dev:
        yield dev


@pytest.fixture
def emulator_factory(tmp_path):
    servers: list[EmulatorServer] = []

    def make(profile: str = "galaxy-s24", root: Path | None = None, **kw) -> EmulatorServer:
        server = make_emulator(root or (tmp_path / f"root{len(servers)}"), profile, **kw)
        servers.append(server)
        return server

    yield make
    for s in servers:
        s.stop()


@pytest.fixture(scope="session")
def adb(tmp_path_factory):
    if ADB is None:
        pytest.skip("Debian's adb is not installed (apt-get install adb)")
    home = tmp_path_factory.mktemp("adb-home")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANDROID_", "ADB_"))}
    env.update(HOME=str(home), ANDROID_ADB_SERVER_PORT=str(free_port()), ADB_MDNS="0")
    client = AdbClient(env=env, home=home)
    client.run("start-server", timeout=60, check=True)
    yield client
    client.run("kill-server", timeout=30)


@pytest.fixture(scope="session")
def adb_serial(adb, emulator):
    adb.connect(emulator.serial)
    return emulator.serial


@pytest.fixture
def adb_shell_device(emulator):
    dev = adb_shell_client(emulator.port, timeout_s=10, nodelay=False)
    yield dev
    dev.close()


@pytest.fixture
def managed_emulator(tmp_path, monkeypatch):
    from on_device.emulator import manager

    monkeypatch.setenv("GEMMA4_MOBILE_HOME", str(tmp_path / "g4m-home"))
    recs = []

    def start(**kw):
        rec = manager.start(**kw)
        recs.append(rec)
        return rec

    yield start
    for r in recs:
        try:
            manager.stop(r.id)
        except Exception:
            pass
