"""The emulator running Android's real userland (mksh + toybox in a bubblewrap sandbox, as uid
shell; on_device/emulator/sandbox.py), tried the way Android's own adb device tests try a phone:
with Debian's adb and with adb-shell, over loopback. Plus the sandbox's security cases."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

import pytest
from adb_shell.adb_device import AdbDevice

from gemma4_common.errors import UserError
from on_device.emulator import sandbox
from sdk_tools.devices.tcp import _Transport

from support.cli import assert_one_line_error, cli
from support.emulator import adb_shell_client, make_emulator
from support.procs import device_processes

pytestmark = pytest.mark.usefixtures("isolated_adb_key")
TMP = "/data/local/tmp"


@pytest.fixture(scope="module")
def phone(tmp_path_factory):
    emu = make_emulator(tmp_path_factory.mktemp("userland") / "root")
    yield emu
    emu.stop()


@pytest.fixture
def dev(phone):
    d = adb_shell_client(phone.port)
    yield d
    d.close()


@pytest.fixture(scope="module")
def serial(adb, phone):
    adb.connect(phone.serial)
    yield phone.serial
    adb.run("disconnect", phone.serial)


# ---- what a phone's shell does ---------------------------------------------------------------------
def test_android_commands_as_on_a_phone(dev):
    out = dev.shell("dd if=/dev/urandom of=/data/local/tmp/r bs=1m count=2 2>/dev/null; stat -c %s /data/local/tmp/r; "
                    "id -un; id -u; echo pid=$$; ps -A -o PID,NAME | grep -c .; "
                    "trap 'echo trapped' EXIT; echo 'line one' | { read a b; echo \"$b\"; }; "
                    "cat /proc/uptime | grep -c '^[0-9.]* [0-9.]*$'; uname -m; uname -a; which toybox dd sh")
    lines = out.splitlines()
    assert lines[0] == str(2 << 20)
    assert lines[1:3] == ["shell", "2000"]
    pid = int(lines[3].split("=")[1])
    assert pid < 100  # its own PID namespace: not the emulator's host PID
    assert 2 <= int(lines[4]) < 30  # ps sees device processes only
    assert lines[5] == "one"
    assert lines[6] == "1"
    assert lines[7] == "aarch64"
    assert lines[8].startswith("Linux ") and lines[8].endswith(" aarch64 Toybox")
    assert lines[9:12] == ["/system/bin/toybox", "/system/bin/dd", "/system/bin/sh"]
    assert dev.shell("nproc").strip() == "8"  # the profile's CPUs, not the host's
    assert lines[-1] == "trapped"


def test_file_modes_are_enforced_by_the_kernel(dev):
    out = dev.shell(f"cd {TMP} && echo secret > locked && chmod a-rwx locked && ls -l locked | cut -c1-10; "
                    "cat locked; echo rc=$?; chmod 600 locked; cat locked")
    assert out.splitlines()[0] == "----------"
    assert "Permission denied" in out and "rc=1" in out and out.endswith("secret\n")


def test_identity_from_the_profile(dev, phone):
    prof = phone.config.profile
    out = dev.shell("grep MemTotal /proc/meminfo; grep -c ^processor /proc/cpuinfo; getprop ro.soc.model; "
                    "getprop init.svc.adbd; getprop ro.nonexistent fallback; setprop debug.g4m.x 42; echo set=$?; "
                    "getprop debug.g4m.x; setprop ro.soc.model X 2>&1; echo ro=$?; getprop ro.soc.model; "
                    "getprop | grep -c '^\\[ro.product.model\\]: '")
    lines = out.splitlines()
    assert lines[0].split()[1] == str(prof.ram_bytes // 1024)
    assert int(lines[1]) == prof.cpu_count
    assert lines[2] == prof.soc_model and lines[3] == "running" and lines[4] == "fallback"
    assert lines[5:7] == ["set=0", "42"]
    assert "Failed to set property 'ro.soc.model'" in lines[7] and "ro=1" in out
    assert lines[-2] == prof.soc_model and lines[-1] == "1"
    assert phone.props["debug.g4m.x"] == "42"  # one property store: the emulator sees it too


def test_df_reports_the_profile_storage(dev, phone):
    out = dev.shell(f"df -k {TMP}")
    row = out.splitlines()[-1].split()
    assert int(row[1]) == phone.config.profile.storage_bytes // 1024 and row[-1] == "/data"


# ---- Debian's adb ----------------------------------------------------------------------------------
def test_debian_adb_exit_codes_stderr_stdin_and_pty(adb, serial):
    r = adb.run("-s", serial, "shell", "echo out; echo err >&2; exit 7")
    assert (r.returncode, r.stdout, r.stderr) == (7, b"out\n", b"err\n")
    r = adb.run("-s", serial, "shell", "cat", input=b"piped\n")
    assert r.stdout == b"piped\n"
    r = adb.run("-s", serial, "shell", "-T", "tty; echo $?")
    assert r.stdout == b"not a tty\n1\n"
    r = adb.run("-s", serial, "shell", "-t", "-t", "tty; stty size")
    text = r.stdout.decode()
    assert text.startswith("/dev/pts/") and "\r\n" in text  # a real PTY (ONLCR)


def test_debian_adb_push_pull_links_and_unicode(adb, serial, tmp_path):
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "ünïcødé ✓.txt").write_bytes(b"unicode\n")
    (tree / "blob").write_bytes(os.urandom(300_000))
    r = adb.run("-s", serial, "push", str(tree), f"{TMP}/tree")
    assert r.returncode == 0, r.stderr
    r = adb.run("-s", serial, "shell",
                f"cat '{TMP}/tree/sub/ünïcødé ✓.txt'; ln -s sub {TMP}/tree/link; ls {TMP}/tree/link/")
    assert r.stdout.decode() == "unicode\nünïcødé ✓.txt\n"
    back = tmp_path / "back"
    r = adb.run("-s", serial, "pull", f"{TMP}/tree/blob", str(back))
    assert r.returncode == 0 and back.read_bytes() == (tree / "blob").read_bytes()


def test_hash_commands_match_hashlib(adb, serial, tmp_path):
    """md5sum ... sha512sum are OpenSSL's (Android's toybox hashes with BoringSSL), toybox's output."""
    import hashlib

    files = {"empty": b"", "small": b"abc\n", "big": os.urandom((3 << 20) + 12345), "ünï cødé": os.urandom(999)}
    src = tmp_path / "h"
    src.mkdir()
    for name, data in files.items():
        (src / name).write_bytes(data)
    assert adb.run("-s", serial, "push", str(src), f"{TMP}/h").returncode == 0
    names = sorted(files)
    quoted = " ".join(f"'{n}'" for n in names)
    for algo in ("md5", "sha1", "sha224", "sha256", "sha384", "sha512"):
        r = adb.run("-s", serial, "shell", f"cd {TMP}/h && {algo}sum {quoted} && readlink /system/bin/{algo}sum")
        assert r.returncode == 0, r.stderr
        lines = r.stdout.decode().splitlines()
        assert lines[:-1] == [f"{hashlib.new(algo, files[n]).hexdigest()}  {n}" for n in names]
        assert lines[-1] == "g4m-hashsum"
    big = hashlib.sha256(files["big"]).hexdigest()
    # stdin (no file, or -), -b, a missing file (error line, rc 1, the rest still hashed), -c, -s
    r = adb.run("-s", serial, "shell", f"cd {TMP}/h && sha256sum < big && sha256sum - < big && sha256sum -b big small;"
                                       " sha256sum nope big; echo rc=$?; sha256sum big small > list; sha256sum -c list;"
                                       " echo c=$?; sha256sum -c -s list; echo s=$?; sha256sum -s big; echo bad=$?")
    out = r.stdout.decode().splitlines()
    assert out[:4] == [f"{big}  -", f"{big}  -", big, hashlib.sha256(files["small"]).hexdigest()]
    assert out[4:6] == [f"{big}  big", "rc=1"]
    assert out[6:] == ["big: OK", "small: OK", "c=0", "s=0", "bad=1"]
    assert r.stderr.decode().splitlines() == ["sha256sum: nope: No such file or directory",
                                              "sha256sum: -s only with -c"]
    # an unreadable file (mode 000: the kernel refuses the shell user) and a changed one under -c
    r = adb.run("-s", serial, "shell", f"cd {TMP}/h && chmod 000 small && md5sum small empty; echo rc=$?; "
                                       "chmod 644 small; echo x >> small; sha256sum -c list; echo c=$?")
    assert r.stdout.decode().splitlines() == [f"{hashlib.md5(b'').hexdigest()}  empty", "rc=1",
                                              "big: OK", "small: FAILED", "c=1"]
    assert r.stderr.decode() == "md5sum: small: Permission denied\n"


def _echo_server() -> tuple[socket.socket, int]:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)

    def serve():
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            with c:
                data = c.recv(1024)
                c.sendall(b"echo:" + data)

    threading.Thread(target=serve, daemon=True).start()
    return srv, srv.getsockname()[1]


def test_adb_forward_reaches_a_device_server(adb, serial):
    from on_device.emulator.server import free_port

    dport, hport = 7101, free_port()
    # A device-side echo server, started by one shell, reachable through `adb forward`.
    server = threading.Thread(target=adb.run, args=("-s", serial, "shell", f"toybox nc -s 127.0.0.1 -p {dport} -l cat"),
                              kwargs={"timeout": 30}, daemon=True)
    server.start()
    r = adb.run("-s", serial, "forward", f"tcp:{hport}", f"tcp:{dport}")
    assert r.returncode == 0, r.stderr
    try:
        deadline = time.monotonic() + 10
        got = b""
        while time.monotonic() < deadline and not got:
            with socket.create_connection(("127.0.0.1", hport), timeout=5) as s:
                s.sendall(b"ping\n")  # no half-close: ADB's CLSE closes both ways
                got = s.recv(100)
            if not got:
                time.sleep(0.1)  # the device server was not listening yet
        assert got == b"ping\n"
    finally:
        adb.run("-s", serial, "forward", "--remove", f"tcp:{hport}")
    server.join(15)


def test_adb_reverse_round_trip(adb, serial):
    srv, hport = _echo_server()
    try:
        r = adb.run("-s", serial, "reverse", "tcp:7201", f"tcp:{hport}")
        assert r.returncode == 0, r.stderr
        r = adb.run("-s", serial, "reverse", "--list")
        assert f"tcp:7201 tcp:{hport}" in r.stdout.decode()
        # stdin stays open until the answer came: ADB streams have no half-close (CLSE ends both ways)
        r = adb.run("-s", serial, "shell", "(echo hi; sleep 1) | toybox nc 127.0.0.1 7201")
        assert r.stdout == b"echo:hi\n", r
        r = adb.run("-s", serial, "reverse", "--remove-all")
        assert r.returncode == 0
        assert adb.run("-s", serial, "reverse", "--list").stdout.strip() == b""
    finally:
        srv.close()


# ---- security --------------------------------------------------------------------------------------
@pytest.fixture
def host_secret(tmp_path):
    d = tmp_path / "host"
    d.mkdir()
    (d / "secret.txt").write_bytes(b"HOST-SECRET-u14\n")
    return d


def test_no_host_path_is_reachable(dev, host_secret):
    s = host_secret / "secret.txt"
    out = dev.shell(f"cd {TMP}; cat {s}; cat ../../../../../../..{s}; ln -sf {s} l; cat l;"
                    f" ln -sf ../../../../../..{s} l2;"
                    f" cat l2; cat /proc/1/root{s}; cat /proc/self/root{s}; ls /proc/1/root/ /proc/self/root/; "
                    f"ls {host_secret}; cat /etc/shadow /root/.bashrc; ls /usr/bin /home 2>&1 | head -3; echo end 2>&1")
    assert "HOST-SECRET" not in out and "secret.txt" not in out.replace(str(s), "")
    # the sandbox root is the device root (plus the loader's libs), not the host's
    listing = dev.shell("ls /")
    assert set(listing.split()) <= {"data", "dev", "etc", "lib", "lib64", "proc", "sdcard", "storage", "system",
                                    "usr", "vendor", "odm", "product", "apex", "mnt", "acct", "config", "cache"}


def test_writes_outside_data_and_sdcard_fail(dev, phone):
    out = dev.shell("for p in /x /system/x /system/bin/x /vendor/x /proc/x /etc/x; do "
                    "touch $p 2>/dev/null && echo WROTE $p; done;"
                    " touch /data/local/tmp/ok /sdcard/ok && echo ok")
    assert "WROTE" not in out and out.strip() == "ok"
    assert "Permission denied" in dev.shell("ls /data 2>&1") and dev.shell("cd /data/local/tmp && pwd") == f"{TMP}\n"
    assert not (phone.fs.root / "x").exists() and not (phone.fs.root / "system" / "x").exists()


def test_host_loopback_is_unreachable_without_a_forward(dev):
    srv, port = _echo_server()
    try:
        out = dev.shell(f"echo hi | toybox nc -w 2 127.0.0.1 {port}; echo rc=$?")
        assert "echo:" not in out and "rc=1" in out
    finally:
        srv.close()


@pytest.mark.slow
def test_a_fork_bomb_is_bounded_and_the_device_keeps_working(phone):
    if not phone.userland.cgroups:
        pytest.skip("no cgroup for the device processes here (not root)")
    a, b = adb_shell_client(phone.port), adb_shell_client(phone.port)
    box: list[str] = []
    bomb = threading.Thread(target=lambda: box.append(a.shell(
        "timeout 8 sh -c 'while :; do sleep 99 & done' 2>/dev/null; echo bounded", timeout_s=60)))
    try:
        bomb.start()
        time.sleep(3)
        pids = [int((g / "pids.current").read_text()) for g in phone.userland.cgroups if g.parent.name == "pids"]
        assert pids and pids[0] <= sandbox.DEVICE_PIDS_MAX
        # others still fork
        assert b.shell("echo alive; ls /data/local/tmp >/dev/null && echo forks") == "alive\nforks\n"
        bomb.join(60)
        assert box == ["bounded\n"]
    finally:
        b.shell("pkill -x sleep")
        a.close()
        b.close()


@pytest.mark.slow
def test_a_runaway_writer_meets_enospc_and_the_device_keeps_working(emulator_factory, tmp_path):
    emu = emulator_factory(storage_bytes=16 << 20)
    a = adb_shell_client(emu.port)
    try:
        # toybox's yes writes 2 bytes a call (~10 s for 16 MiB): no output meanwhile, so a long read timeout
        out = a.shell(f"yes > {TMP}/f; echo rc=$?; yes > /sdcard/g; echo rc=$?; echo x > {TMP}/small; echo small=$?",
                      timeout_s=120, read_timeout_s=120)
        # /sdcard is on /data's partition, as on a phone; and the full partition takes nothing more
        assert out.count("No space left on device") == 3 and out.count("rc=1") == 2 and "small=1" in out, out
        src = tmp_path / "p.bin"
        src.write_bytes(os.urandom(1 << 20))
        with pytest.raises(Exception):
            a.push(str(src), f"{TMP}/pushed.bin")  # a push into the full partition fails too
        assert a.shell(f"rm {TMP}/f /sdcard/g; echo alive") == "alive\n"
        a.push(str(src), f"{TMP}/pushed.bin")
        assert a.shell(f"stat -c %s {TMP}/pushed.bin") == f"{1 << 20}\n"
    finally:
        a.close()


def test_device_processes_start_with_default_signals_whatever_the_host_ignores(phone):
    """An emulator started under `nohup` (SIGHUP ignored, inherited by every child) must still give
    device processes default signals, as adbd's children have: else a session whose host went away
    ignores its SIGHUP, mksh cannot trap it, and its temporary files stay (the cut-push and SIGHUP
    tests failed in full runs started with nohup and passed on CI; they pass under nohup with this)."""
    dev = adb_shell_client(phone.port)
    old = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as nohup leaves it, for the sessions spawned now
    try:
        status = dev.shell("cat /proc/self/status")
        trapped = dev.shell("trap 'echo hup-trapped' HUP; kill -HUP $$; echo after")
    finally:
        signal.signal(signal.SIGHUP, old)
        dev.close()
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    assert int(fields["SigIgn"], 16) == 0, fields["SigIgn"]
    assert int(fields["SigBlk"], 16) == 0, fields["SigBlk"]
    assert "hup-trapped" in trapped, trapped


def test_a_session_whose_host_goes_away_gets_sighup(phone):
    a = adb_shell_client(phone.port)
    t = threading.Thread(target=lambda: _swallow(a.shell, "sleep 987", timeout_s=10), daemon=True)
    t.start()
    b = adb_shell_client(phone.port)
    try:
        deadline = time.monotonic() + 30
        while "sleep 987" not in b.shell("ps -A -o ARGS") and time.monotonic() < deadline:
            time.sleep(0.05)
        # it must be running before the host goes (a slow start on a loaded machine once raced this)
        assert "sleep 987" in b.shell("ps -A -o ARGS")
        # The host side goes away without closing the stream, as a dying process does (its kernel
        # ends the connection even while thread `a` sits in select() on it).
        a._io_manager._transport.shutdown()
        a._io_manager._transport.close()
        deadline = time.monotonic() + 10
        while "sleep 987" in b.shell("ps -A -o ARGS") and time.monotonic() < deadline:
            time.sleep(0.05)
        # On failure, say why the sleep lives: its signal state (SIGHUP ignored, blocked or pending?)
        # and its process group (did the hang-up reach it?).
        why = device_processes(b, "pgrep -f 'sleep 987'")
        assert "sleep 987" not in b.shell("ps -A -o ARGS"), why
    finally:
        b.close()


def _swallow(fn, *a, **kw):
    try:
        return fn(*a, **kw)
    except Exception:
        return None


def test_auth_refuses_an_unknown_key(emulator_factory, tmp_path):
    from adb_shell.auth.keygen import keygen
    from adb_shell.auth.sign_pythonrsa import PythonRSASigner

    emu = emulator_factory(auth=True)
    keygen(str(tmp_path / "k"))
    signer = PythonRSASigner((tmp_path / "k.pub").read_text(), (tmp_path / "k").read_text())
    dev = AdbDevice(_Transport("127.0.0.1", emu.port), default_transport_timeout_s=5)
    with pytest.raises(Exception):
        dev.connect(rsa_keys=[signer], auth_timeout_s=2, read_timeout_s=3)
    assert not dev.available


def test_without_bubblewrap_start_says_so_in_one_line(monkeypatch, tmp_path):
    monkeypatch.setattr(sandbox, "_TOOLS", None)
    real = sandbox.shutil.which
    monkeypatch.setattr(sandbox.shutil, "which", lambda n, path=None: None if n == "bwrap" else real(n, path=path))
    with pytest.raises(UserError) as ei:
        make_emulator(tmp_path / "root")
    line = ei.value.one_line()
    assert "bwrap" in line and "bubblewrap" in line and "\n" not in line


def test_cli_start_without_bubblewrap_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("GEMMA4_MOBILE_HOME", str(tmp_path))
    monkeypatch.setattr(sandbox, "_TOOLS", None)
    real = sandbox.shutil.which
    monkeypatch.setattr(sandbox.shutil, "which", lambda n, path=None: None if n == "bwrap" else real(n, path=path))
    r = cli("emulator", "start")
    assert_one_line_error(r, "bubblewrap", "bwrap")
    assert not (tmp_path / "emulators").exists() or not list((tmp_path / "emulators").iterdir())


def test_fs_walk_contract(phone):
    """sandbox._fenced_dir_fd relies on fs.py's private `_walk` (a Loc with dirfd + name)."""
    fd = sandbox._fenced_dir_fd(phone.fs, "/data")
    try:
        assert os.path.samefile(f"/proc/self/fd/{fd}", f"/proc/{phone.userland.init_pid}/root/data")
    finally:
        os.close(fd)


def test_exec_and_framebuffer_services(dev, adb, serial):
    r = adb.run("-s", serial, "exec-out", "printf 'a\\0b'; echo err >&2")
    assert r.stdout == b"a\0berr\n"  # exec: is raw: one stream, no exit code
    from sdk_tools.devices.tcp import adb_shell_raw_service

    data = adb_shell_raw_service(dev, b"framebuffer", b"", read_timeout_s=30, timeout_s=30)
    import struct

    head = struct.unpack("<13I", data[:52])
    version, bpp, size, w, h = head[:5]
    assert (version, bpp, size) == (1, 32, w * h * 4) and len(data) == 52 + size and not data[52:].strip(b"\0")


def test_device_init_survives_the_shell_user_and_reaps_orphans(phone):
    a = adb_shell_client(phone.port)
    try:
        a.shell("kill -9 1; kill -KILL -1; pkill -9 init; (sleep 0.2 &) ; true")
        time.sleep(0.5)
        out = a.shell("ps -A -o PID,STAT,NAME")
        rows = [ln.split() for ln in out.splitlines()[1:]]
        assert ["1", "init"] == [rows[0][0], rows[0][-1]], out
        assert not [r for r in rows if r[1].startswith("Z")], out  # the orphaned sleep was reaped by init
        assert a.shell("echo still") == "still\n"
    finally:
        a.close()


def test_a_device_whose_init_died_says_so(emulator_factory, caplog):
    """Nothing inside the device can kill its init; if the host (or the kernel) does, the emulator
    logs the init's exit and refuses new sessions with that reason, not nsenter's own error."""
    emu = emulator_factory()
    os.kill(emu.userland.init_pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while emu.userland.init.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    d = adb_shell_client(emu.port)
    try:
        out = _swallow(d.shell, "echo alive")
    finally:
        d.close()
    assert not out
    assert "device init exited" in caplog.text and "the device is down: its init exited" in caplog.text
