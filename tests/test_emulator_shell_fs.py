"""The emulator's shell (Android's mksh + toybox), sandboxed filesystem, quota, profiles, runner hook
and manager/CLI."""

from __future__ import annotations

import errno
import functools
import os
import socket
import sys
import threading
import types

import pytest
from adb_shell.exceptions import PushFailedError

from on_device.emulator import list_profiles, load_profile
from on_device.emulator.fs import FsError, SandboxFS
from on_device.runner_contract import EMULATOR_RUNNER_MAGIC

from support.cli import cli
from support.emulator import RawAdb, adb_shell_client

# adb-shell's stock TCP client, as a user of that library connects
_device = functools.partial(adb_shell_client, timeout_s=10, nodelay=False)


@pytest.fixture
def sh(adb, adb_serial):
    """(rc, stdout, stderr) of a command in /data/local/tmp through Debian's adb (shell v2)."""
    def run(cmd: str, stdin: bytes = b"") -> tuple[int, str, str]:
        r = adb.run("-s", adb_serial, "shell", f"cd /data/local/tmp/sh && {cmd}", input=stdin)
        return r.returncode, r.stdout.decode(), r.stderr.decode()

    adb.run("-s", adb_serial, "shell", "rm -rf /data/local/tmp/sh; mkdir /data/local/tmp/sh")
    return run


# ---- shell semantics: Android's own mksh and toybox, as on a phone --------------------------------
SH_ERR = "/system/bin/sh:"  # mksh's errors as Android's R59c words them (no "E: ", see sandbox.py)


@pytest.mark.parametrize("cmd,rc,out,err", [
    ("echo hi 'a  b' \"c $?\"", 0, "hi a  b c 0\n", ""),
    ("false; echo $?", 0, "1\n", ""),
    ("true && echo yes || echo no", 0, "yes\n", ""),
    ("false && echo yes || echo no", 0, "no\n", ""),
    ("false || false", 1, "", ""),
    ("echo 'a;b' \"x&&y\" a\\ b", 0, "a;b x&&y a b\n", ""),
    ("getprop ro.product.model", 0, "SM-S921U\n", ""),
    ("getprop no.such.prop", 0, "\n", ""),
    ("getprop no.such.prop fallback", 0, "fallback\n", ""),
    ("nosuch --flag", 127, "", f"{SH_ERR} nosuch: inaccessible or not found\n"),
    ("nosuch; echo rc=$?", 0, "rc=127\n", f"{SH_ERR} nosuch: inaccessible or not found\n"),
    ("exit 42; echo never", 42, "", ""),
    ("cat /nope", 1, "", "cat: /nope: No such file or directory\n"),
    ("ls /data", 1, "", "ls: /data: Permission denied\n"),
    ("uname -m", 0, "aarch64\n", ""),
    ("echo x > /system/y", 1, "", f"{SH_ERR} /system/y: create: Read-only file system\n"),
    ("echo err 1>&2", 0, "", "err\n"),
    ("ls /nope 2>/dev/null; echo $?", 0, "1\n", ""),
    ("X=5; echo $X ${X}y", 0, "5 5y\n", ""),
    ("FOO=bar env | grep ^FOO=", 0, "FOO=bar\n", ""),
    ("echo $(getprop ro.board.platform)", 0, "pineapple\n", ""),
    ("[ 3 -gt 2 ] && test -d /data/local/tmp && echo ok", 0, "ok\n", ""),
    ("cat", 0, "from stdin\n", ""),
    ("echo 'unterminated", 1, "", None),
])
def test_shell_semantics(sh, cmd, rc, out, err):
    got_rc, got_out, got_err = sh(cmd, stdin=b"from stdin\n")
    assert got_rc == rc
    assert got_out == out
    if err is not None:
        assert got_err == err


def test_shell_files(sh):
    assert sh("mkdir -p a/b/c && echo one > a/f && echo two >> a/f && cat a/f") == (0, "one\ntwo\n", "")
    assert sh("cp a/f a/g && mv a/g a/b/h && ls a a/b")[1] == "a:\nb\nf\n\na/b:\nc\nh\n"
    rc, out, _ = sh("sha256sum a/f")
    assert out.endswith("  a/f\n")
    import hashlib

    assert out.split()[0] == hashlib.sha256(b"one\ntwo\n").hexdigest()
    assert sh("chmod 755 a/f && stat -c '%a %s %n' a/f") == (0, "755 8 a/f\n", "")
    assert sh("ls -d a/*")[1] == "a/b\na/f\n"
    assert sh("rm a/b; echo $?") == (0, "1\n", "rm: a/b: Is a directory\n")
    assert sh("rm -r a/b && ls a") == (0, "f\n", "")
    assert sh("rm -f a/nothing; echo $?") == (0, "0\n", "")
    assert sh("mkdir a; echo $?") == (0, "1\n", "mkdir: 'a': File exists\n")
    assert sh("cd a && pwd") == (0, "/data/local/tmp/sh/a\n", "")
    assert sh("touch t && ls -l t")[1].startswith("-rw-")
    rc, out, _ = sh("df /data/local/tmp")
    assert rc == 0 and out.splitlines()[1].endswith("/data")
    assert int(out.splitlines()[1].split()[1]) == load_profile("galaxy-s24").storage_bytes // 1024


def test_proc_and_profile_files(adb_shell_device):
    dev = adb_shell_device
    meminfo = dev.shell("cat /proc/meminfo")
    assert meminfo.startswith("MemTotal:") and f"{8 * 1024 * 1024} kB" in meminfo
    assert dev.shell("grep -c ^processor /proc/cpuinfo") == "8\n"
    assert dev.shell("nproc") == "8\n"
    assert dev.shell("ls -l /sdcard").rstrip().endswith("/sdcard -> /storage/emulated/0")
    assert dev.shell("echo hi > /sdcard/x && cat /storage/emulated/0/x") == "hi\n"


# ---- sandbox -------------------------------------------------------------------------------------
def test_paths_never_leave_the_sandbox(tmp_path):
    prof = load_profile("galaxy-s24")
    root = tmp_path / "root"
    fs = SandboxFS(root, prof.mounts, prof.storage_bytes)
    fs.ensure_layout()
    real_root = root.resolve()
    outside = tmp_path / "secret.txt"
    outside.write_text("host secret")
    tmpdir = fs.resolve("/data/local/tmp")
    # Links a hostile push or shell could create: absolute and relative escapes.
    os.symlink(str(outside), tmpdir / "abs_link")
    os.symlink("../../../../../../../../" + str(outside), tmpdir / "rel_link")
    os.symlink(str(tmp_path), tmpdir / "dir_link")
    os.symlink("loop2", tmpdir / "loop1")
    os.symlink("loop1", tmpdir / "loop2")
    probes = ["/../../../../etc/passwd", "../../../../" + str(outside), "/data/local/tmp/abs_link",
              "/data/local/tmp/rel_link", "/data/local/tmp/dir_link/secret.txt", "/data/local/tmp/../../../../..",
              "dir_link/../secret.txt", str(outside)]
    for p in probes:
        host = fs.resolve(p, "/data/local/tmp")
        assert host == real_root or real_root in host.parents, (p, host)
        with pytest.raises(OSError):
            fs.open_read(p, "/data/local/tmp").read()
    with pytest.raises(FsError):
        fs.resolve("/data/local/tmp/loop1")
    # The absolute link means the same path inside the device.
    (real_root / "etc").mkdir()
    (real_root / "etc" / "passwd").write_text("device passwd")
    assert fs.open_read("/data/local/tmp/../../../etc/passwd").read() == b"device passwd"


def test_mkdir_parents_tolerates_a_concurrent_creator(tmp_path):
    """Two pushes into a new directory race to create it (CI saw 'couldn't create file: File exists');
    `mkdir -p` semantics: a parent made by the other client between our check and our mkdir is fine."""
    prof = load_profile("galaxy-s24")
    fs = SandboxFS(tmp_path / "root", prof.mounts, prof.storage_bytes)
    fs.ensure_layout()
    original = SandboxFS.mkdir

    class Racing(SandboxFS):
        def mkdir(self, path, cwd="/", parents=False, mode=0o771):
            if not parents and path == "/data/local/tmp/race":
                original(self, path, cwd)  # the other client wins the race
            return original(self, path, cwd, parents, mode)

    racing = Racing(tmp_path / "root", prof.mounts, prof.storage_bytes)
    racing.mkdir("/data/local/tmp/race/a/b", parents=True)
    assert fs.resolve("/data/local/tmp/race/a/b").is_dir()
    # Without -p, or when the path is a file, EEXIST still surfaces.
    with pytest.raises(FsError) as e:
        fs.mkdir("/data/local/tmp/race")
    assert e.value.errno == errno.EEXIST
    fs.resolve("/data/local/tmp/file").write_text("x")
    with pytest.raises(FsError):
        fs.mkdir("/data/local/tmp/file/sub", parents=True)


def test_traversal_over_adb(adb_shell_device, emulator, tmp_path):
    outside = tmp_path / "host_only.txt"
    outside.write_text("do not leak")
    os.symlink(str(outside), emulator.fs.resolve("/data/local/tmp") / "leak")
    dev = adb_shell_device
    with pytest.raises(Exception):
        dev.pull("/data/local/tmp/leak", str(tmp_path / "got"))
    assert not (tmp_path / "got").exists() or (tmp_path / "got").read_bytes() != b"do not leak"
    assert "do not leak" not in dev.shell("cat /data/local/tmp/leak ../../../" + str(outside))
    src = tmp_path / "evil.txt"
    src.write_text("evil")
    escape = "/data/local/tmp/../../../../.." + str(tmp_path) + "/planted.txt"
    try:
        dev.push(str(src), escape)
    except PushFailedError:
        pass
    assert not (tmp_path / "planted.txt").exists()
    dev.shell("ln -s / /data/local/tmp/rootlink")
    assert not (tmp_path / "x2").exists()
    try:
        dev.push(str(src), "/data/local/tmp/rootlink" + str(tmp_path) + "/x2")
    except PushFailedError:
        pass
    assert not (tmp_path / "x2").exists()


def test_quota_push_fails_like_a_full_phone(emulator_factory, tmp_path):
    emu = emulator_factory(storage_bytes=1_000_000)
    dev = _device(emu.port)
    try:
        src = tmp_path / "big.bin"
        src.write_bytes(os.urandom(1_500_000))
        with pytest.raises(PushFailedError, match="No space left on device"):
            dev.push(str(src), "/data/local/tmp/big.bin")
        assert list(emu.fs.resolve("/data/local/tmp").iterdir()) == []
        small = tmp_path / "small.bin"
        small.write_bytes(b"s" * 600_000)
        dev.push(str(small), "/data/local/tmp/a.bin")
        with pytest.raises(PushFailedError, match="No space left on device"):
            dev.push(str(small), "/data/local/tmp/b.bin")  # fits alone, not with a.bin
        dev.push(str(small), "/data/local/tmp/a.bin")  # overwriting frees the old copy
        # Shell copies meet the full partition too (with cat: toybox 0.8.9's cp, Android 14's, exits 0
        # on a short write).
        assert dev.shell("cat /data/local/tmp/a.bin > /sdcard/c.bin; echo $?").endswith("1\n")
        dev.shell("rm /sdcard/c.bin")
        assert sorted(p.name for p in emu.fs.resolve("/data/local/tmp").iterdir()) == ["a.bin"]
        assert "No space left on device" in dev.shell("cat /data/local/tmp/a.bin 2>&1 > /data/local/tmp/d.bin")
        dev.shell("rm /data/local/tmp/d.bin")
        used = int(dev.shell("df /data/local/tmp").splitlines()[1].split()[2])
        assert used == 600_000 // 1024
    finally:
        dev.close()


# ---- profiles ------------------------------------------------------------------------------------
def test_profiles():
    names = list_profiles()
    assert {"galaxy-s24", "galaxy-s25", "pixel-8-pro", "dimensity-9300", "dimensity-9400"} <= set(names)
    expect = {
        "galaxy-s24": ("SM8650", "pineapple", "qualcomm"),
        "galaxy-s25": ("SM8750", "sun", "qualcomm"),
        "pixel-8-pro": ("Tensor G3", "zuma", None),
        "dimensity-9300": ("MT6989", "mt6989", "mediatek"),
        "dimensity-9400": ("MT6991", "mt6991", "mediatek"),
    }
    for name, (soc, platform, npu) in expect.items():
        p = load_profile(name)
        assert (p.props["ro.soc.model"], p.props["ro.board.platform"], p.npu) == (soc, platform, npu)
        assert p.props["ro.product.cpu.abi"] == "arm64-v8a"
        assert 0 < p.ram_budget_bytes < p.ram_bytes and p.cpu_count >= 8 and p.storage_bytes > 0
        assert p.mounts["/data/local/tmp"] == "rw"
    assert load_profile("pixel-8-pro").props["ro.soc.manufacturer"] == "Google"
    from gemma4_common.errors import UserError

    with pytest.raises(UserError, match="galaxy-s24"):
        load_profile("no-such-phone")


# ---- runner contract hook ------------------------------------------------------------------------
def test_runner_contract_hook(emulator_factory, monkeypatch):
    calls = []
    release = threading.Event()

    def run_runner(argv, ctx):
        calls.append((argv, ctx))
        ctx.stdout(b"Prefill Speed: 10.0 tokens/sec\n")
        model = ctx.resolve(argv[1].split("=", 1)[1])
        ctx.stdout(f"model bytes: {model.read_bytes().decode()}\n".encode())
        if "--wait" in argv:
            release.wait(10)
        ctx.stderr(b"note\n")
        return 3

    # The emulator imports on_device.runner.run_runner when a runner file is executed.
    monkeypatch.setitem(sys.modules, "on_device.runner", types.SimpleNamespace(run_runner=run_runner))
    emu = emulator_factory(profile="dimensity-9400")
    d = emu.fs.resolve("/data/local/tmp")
    (d / "g4m").mkdir()
    runner = d / "g4m" / "litert_lm_main"
    runner.write_bytes(EMULATOR_RUNNER_MAGIC + b"# runner\n")
    (d / "g4m" / "model.litertlm").write_bytes(b"MODEL")
    dev = _device(emu.port)
    try:
        # No exec bit yet: refused like a phone.
        out = dev.shell("/data/local/tmp/g4m/litert_lm_main; echo rc=$?")
        assert out == f"{SH_ERR} /data/local/tmp/g4m/litert_lm_main: can't execute: Permission denied\nrc=126\n"
        dev.shell("chmod 755 /data/local/tmp/g4m/litert_lm_main")
        out = dev.shell("cd /data/local/tmp/g4m && LD_LIBRARY_PATH=/data/local/tmp/g4m "
                        "./litert_lm_main --model_path=model.litertlm --backend=cpu; echo rc=$?")
        assert out == "Prefill Speed: 10.0 tokens/sec\nmodel bytes: MODEL\nnote\nrc=3\n"
        argv, ctx = calls[-1]
        assert argv == ["./litert_lm_main", "--model_path=model.litertlm", "--backend=cpu"]
        assert ctx.env["LD_LIBRARY_PATH"] == "/data/local/tmp/g4m" and ctx.cwd == "/data/local/tmp/g4m"
        assert ctx.profile.props["ro.soc.model"] == "MT6991"
        # `..` stops at the device root: the device's own /etc/passwd, never the host's
        seen = ctx.resolve("/data/local/tmp/g4m/../../../../../../etc/passwd").read_bytes()
        assert b"shell:x:2000:" in seen and seen != open("/etc/passwd", "rb").read()
        # Missing runner, and a real aarch64 binary the emulator cannot run.
        assert dev.shell("/data/local/tmp/g4m/nothing; echo rc=$?").endswith("inaccessible or not found\nrc=127\n")
        (d / "g4m" / "elf").write_bytes(b"\x7fELF\x02\x01\x01" + b"\0" * 100)
        os.chmod(d / "g4m" / "elf", 0o755)
        out = dev.shell("/data/local/tmp/g4m/elf; echo rc=$?")
        # mksh's own answer to a binary the kernel cannot run (ENOEXEC): it names the ELF, status 1
        assert out == f"{SH_ERR} /data/local/tmp/g4m/elf: not executable: 64-bit ELF file\nrc=1\n"
    finally:
        dev.close()

    # The runner runs in a worker thread and streams: others are served meanwhile.
    c = RawAdb(emu.port)
    try:
        c.handshake()
        rid = c.open(1, "shell,v2,raw:/data/local/tmp/g4m/litert_lm_main "
                        "--model_path=/data/local/tmp/g4m/model.litertlm --wait")
        cmd, a0, a1, payload = c.recv()
        assert cmd == b"WRTE" and b"Prefill Speed" in payload  # streamed before the runner ends
        c.send(b"OKAY", 1, rid)
        dev2 = _device(emu.port)
        assert dev2.shell("echo meanwhile") == "meanwhile\n"
        dev2.close()
        release.set()
        rest = c.read_stream(1, rid)
        assert rest.endswith(b"\x03\x01\x00\x00\x00\x03")  # shell v2 exit packet: status 3
    finally:
        c.close()


# ---- manager and CLI -----------------------------------------------------------------------------
def test_manager_start_list_stop(managed_emulator):
    from on_device.emulator import manager

    rec = managed_emulator(profile="dimensity-9400", storage_bytes=50_000_000)
    assert rec.serial == f"127.0.0.1:{rec.port}" and not 5554 <= rec.port <= 5585
    dev = _device(rec.port)
    assert dev.shell("getprop ro.soc.model") == "MT6991\n"
    dev.close()
    listed = manager.list_emulators()
    assert [r.serial for r in listed] == [rec.serial] and listed[0].alive
    manager.stop(rec.serial)
    assert manager.list_emulators() == []
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", rec.port), timeout=1).close()


def test_cli(managed_emulator, tmp_path):
    from on_device.emulator import manager

    try:
        _cli_round_trip()
    finally:
        manager.stop_all()


def _cli_round_trip():
    res = cli("emulator", "profiles", "--json")
    assert res.code == 0
    profs = res.json()
    assert {p["name"] for p in profs} >= {"galaxy-s24", "pixel-8-pro"}
    res = cli("emulator", "start", "--profile", "nope")
    assert res.code == 2
    assert "unknown device profile" in res.err
    assert cli("emulator", "start", "--port", "5555").code == 2
    assert cli("emulator", "stop", "127.0.0.1:1").code == 2
    res = cli("emulator", "start", "--profile", "galaxy-s25", "--json")
    assert res.code == 0
    rec = res.json()
    res = cli("emulator", "list", "--json")
    assert res.code == 0
    assert [r["serial"] for r in res.json()] == [rec["serial"]]
    res = cli("emulator", "stop", "--all")
    assert res.code == 0
    assert f"stopped {rec['serial']}" in res.out
