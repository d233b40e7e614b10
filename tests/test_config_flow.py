"""Config flows one way: settings are read in gemma4_common.config (one prefix, GEMMA4_MOBILE_), the
CLI resolves the runner and passes it down, the library takes what it is given; and the fleet layer
runs work on several devices, keeping the others' results when one fails."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from gemma4_common import config
from gemma4_common.errors import UserError
from on_device.runner_contract import emulator_runner_bytes

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def clean_config_env(monkeypatch, tmp_path):
    for suffix in config.VARIABLES:
        monkeypatch.delenv(config.PREFIX + suffix, raising=False)
        monkeypatch.delenv("G4M_" + suffix, raising=False)
    monkeypatch.setattr(config, "_noted", set())
    monkeypatch.setenv("GEMMA4_MOBILE_CONFIG", str(tmp_path / "no-config.json"))
    return tmp_path


def test_one_prefix_and_the_old_one_still_read_with_a_note(clean_config_env, monkeypatch, capsys):
    monkeypatch.setenv("G4M_DEVICES", "127.0.0.1:1")
    assert config.env("DEVICES") == "127.0.0.1:1"
    assert config.env("DEVICES") == "127.0.0.1:1"
    err = capsys.readouterr().err
    assert err.count("$G4M_DEVICES is now $GEMMA4_MOBILE_DEVICES") == 1
    monkeypatch.setenv("GEMMA4_MOBILE_DEVICES", "127.0.0.1:2")
    assert config.env("DEVICES") == "127.0.0.1:2"  # the new name wins
    monkeypatch.setenv("GEMMA4_MOBILE_DEVICES", "")
    monkeypatch.delenv("G4M_DEVICES")
    assert config.env("DEVICES") is None
    monkeypatch.setenv("GEMMA4_MOBILE_HOME", str(clean_config_env / "home"))
    assert config.state_dir() == clean_config_env / "home"


def test_library_code_reads_no_setting_of_ours_but_through_config():
    """No module outside gemma4_common/config.py reads a GEMMA4_MOBILE_/G4M_ variable itself
    (the emulator runner's internal job variable excepted: it is a message, not a setting)."""
    bad = []
    for package in ("sdk_tools", "converters", "on_device", "gemma4_common"):
        for path in (REPO / package).rglob("*.py"):
            if path == REPO / "gemma4_common" / "config.py":
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                        and node.value.startswith(("GEMMA4_MOBILE_", "G4M_")) \
                        and node.value != "GEMMA4_MOBILE_RUNNER_JOB":
                    bad.append(f"{path.relative_to(REPO)}:{node.lineno} {node.value}")
    assert not bad, bad


def test_the_cli_resolves_the_runner_in_one_order(clean_config_env, monkeypatch):
    from sdk_tools.cli.options import resolve_runner

    tmp = clean_config_env
    with pytest.raises(UserError) as ei:
        resolve_runner(None)
    msg = ei.value.one_line()
    assert "android_arm64" in msg and "emulator runner -o" in msg
    assert resolve_runner(None, required=False) is None
    with pytest.raises(UserError, match="does not exist"):
        resolve_runner(tmp / "nope")
    elf = tmp / "x86"
    elf.write_bytes(b"\x7fELF\x02\x01\x01" + b"\0" * 9 + b"\x02\x00\x3e\x00" + b"\0" * 40)
    with pytest.raises(UserError, match="x86-64, not android_arm64"):
        resolve_runner(elf)
    good, other = tmp / "runner", tmp / "other"
    good.write_bytes(emulator_runner_bytes())
    other.write_bytes(emulator_runner_bytes())
    (tmp / "cfg.json").write_text(json.dumps({"runner": str(other)}))
    monkeypatch.setenv("GEMMA4_MOBILE_CONFIG", str(tmp / "cfg.json"))
    assert resolve_runner(None) == other  # the config file
    monkeypatch.setenv("GEMMA4_MOBILE_RUNNER", str(good))
    assert resolve_runner(None) == good  # the environment before the config file
    assert resolve_runner(other) == other  # --runner before both
    (tmp / "cfg.json").write_text("{broken")
    monkeypatch.delenv("GEMMA4_MOBILE_RUNNER")
    with pytest.raises(UserError, match="the config file .* is not valid JSON"):
        resolve_runner(None)


def test_deploy_pushes_only_the_runner_it_is_given(clean_config_env, monkeypatch, emulator, e2b_int8_bundle,
                                                   isolated_adb_key):
    """$GEMMA4_MOBILE_RUNNER is the CLI's business: deploy() without a runner pushes the bundle alone."""
    from sdk_tools.deploy import deploy
    from sdk_tools.devices.discovery import open_device

    runner = clean_config_env / "runner"
    runner.write_bytes(emulator_runner_bytes())
    monkeypatch.setenv("GEMMA4_MOBILE_RUNNER", str(runner))
    with open_device(emulator.serial) as dev:
        d = deploy(dev, e2b_int8_bundle, device_dir="/data/local/tmp/g4m-config-flow")
        assert not d.has_runner and {f.kind for f in d.files} == {"model", "manifest"}
        assert dev.stat(str(d.runner_path)).exists is False
        d = deploy(dev, e2b_int8_bundle, runner=runner, device_dir="/data/local/tmp/g4m-config-flow")
        assert d.has_runner and [f.action for f in d.files if f.kind == "runner"] == ["pushed"]


def test_fleet_keeps_the_others_when_one_fails(emulator, isolated_adb_key):
    from sdk_tools.devices.discovery import open_device
    from sdk_tools.fleet import on_each

    def opener(serial: str):
        if serial == "broken:1":
            raise UserError("cannot reach broken:1", "check it")
        return open_device(serial)

    def work(dev):
        if dev.serial == "bug:2":
            raise RuntimeError("a bug")
        return dev.check_shell("getprop ro.product.model", "getprop").strip()

    class Named:  # the emulator under another serial, to tell the work's devices apart
        def __init__(self, serial):
            self.serial, self._dev = serial, open_device(emulator.serial)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._dev.close()

        def check_shell(self, *a):
            return self._dev.check_shell(*a)

    out = on_each([emulator.serial, "broken:1", "bug:2"], work,
                  open_device=lambda s: Named(s) if s == "bug:2" else opener(s))
    assert list(out.results) == [emulator.serial] and out.results[emulator.serial]
    assert out.failures == {"broken:1": "cannot reach broken:1; check it", "bug:2": "RuntimeError: a bug"}
    with pytest.raises(UserError, match="2 of 3 device"):
        out.raise_failures(3, "fix them")
    with pytest.raises(UserError, match="cannot reach broken:1"):  # one device: its error, unchanged
        on_each(["broken:1"], work, open_device=opener)
