"""The emulator against Debian's real `adb` (29.x): connect, shell v2 exit codes and stderr, getprop,
push/pull of files and directories, RSA auth with adb's own key, a full phone."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path



def _text(r) -> str:
    return (r.stdout + r.stderr).decode(errors="replace")


def test_connect_and_getprop(adb, adb_serial, emulator):
    r = adb.run("devices", "-l")
    line = next(ln for ln in r.stdout.decode().splitlines() if ln.startswith(adb_serial))
    assert " device " in line and "device:e1q" in line
    r = adb.run("-s", adb_serial, "shell", "getprop", "ro.soc.model")
    assert r.returncode == 0 and r.stdout == b"SM8650\n"
    r = adb.run("-s", adb_serial, "shell", "getprop")
    assert b"[ro.board.platform]: [pineapple]" in r.stdout
    assert adb.run("-s", adb_serial, "get-serialno").stdout.decode().strip() == adb_serial


def test_shell_exit_codes_and_separate_stderr(adb, adb_serial):
    r = adb.run("-s", adb_serial, "shell", "echo out; echo err >&2; exit 7")
    assert (r.returncode, r.stdout, r.stderr) == (7, b"out\n", b"err\n")
    r = adb.run("-s", adb_serial, "shell", "definitely_not_a_command")
    assert r.returncode == 127
    assert r.stderr == b"/system/bin/sh: definitely_not_a_command: inaccessible or not found\n"
    r = adb.run("-s", adb_serial, "shell", "ls", "/data/local/tmp/nope")
    assert r.returncode == 1 and b"No such file or directory" in r.stderr
    # Arguments are joined by adb and re-split by the device shell, quoting included.
    r = adb.run("-s", adb_serial, "shell", "echo", "'a  b'", "&&", "echo", "ok")
    assert r.stdout == b"a  b\nok\n"
    # stdin reaches the device shell.
    r = adb.run("-s", adb_serial, "shell", "cat", input=b"piped\n")
    assert r.stdout == b"piped\n"
    r = adb.run("-s", adb_serial, "shell", input=b"echo interactive; exit 3\n")
    assert (r.returncode, r.stdout) == (3, b"interactive\n")


def test_push_pull_file_and_directory_byte_identical(adb, adb_serial, tmp_path):
    tree = tmp_path / "tree"
    (tree / "sub" / "deeper").mkdir(parents=True)
    files = {
        "big.bin": os.urandom(3 * 1024 * 1024 + 17),
        "empty": b"",
        "sub/small.txt": b"hello\n",
        "sub/deeper/odd name.bin": os.urandom(70_001),
    }
    for rel, data in files.items():
        (tree / rel).write_bytes(data)
    os.chmod(tree / "sub/small.txt", 0o755)
    r = adb.run("-s", adb_serial, "push", str(tree), "/data/local/tmp/adbtree")
    assert r.returncode == 0, _text(r)
    r = adb.run("-s", adb_serial, "shell",
                "sha256sum /data/local/tmp/adbtree/big.bin; ls -l /data/local/tmp/adbtree/sub")
    assert r.stdout.split()[0].decode() == hashlib.sha256(files["big.bin"]).hexdigest()
    assert b"-rwxr-xr-x" in r.stdout  # the mode travels with the push
    back = tmp_path / "back"
    r = adb.run("-s", adb_serial, "pull", "/data/local/tmp/adbtree", str(back))
    assert r.returncode == 0, _text(r)
    for rel, data in files.items():
        assert (back / rel).read_bytes() == data, rel
    # A single file, to an explicit name, and back.
    r = adb.run("-s", adb_serial, "push", str(tree / "big.bin"), "/data/local/tmp/one.bin")
    assert r.returncode == 0, _text(r)
    r = adb.run("-s", adb_serial, "pull", "/data/local/tmp/one.bin", str(tmp_path / "one.bin"))
    assert r.returncode == 0 and (tmp_path / "one.bin").read_bytes() == files["big.bin"]
    r = adb.run("-s", adb_serial, "pull", "/data/local/tmp/missing.bin", str(tmp_path / "x"))
    assert r.returncode != 0 and b"No such file or directory" in r.stderr + r.stdout


def test_push_outside_writable_mounts_is_refused(adb, adb_serial, tmp_path):
    f = tmp_path / "f.txt"
    f.write_text("x")
    r = adb.run("-s", adb_serial, "push", str(f), "/system/f.txt")
    assert r.returncode != 0 and b"Read-only file system" in r.stderr + r.stdout
    r = adb.run("-s", adb_serial, "push", str(f), "/data/f.txt")
    assert r.returncode != 0 and b"Permission denied" in r.stderr + r.stdout


def test_auth_with_adb_key_and_unknown_key_refused(adb, emulator_factory, tmp_path):
    keys = tmp_path / "adb_keys"
    keys.write_text(adb.pubkey.read_text())
    trusted = emulator_factory(auth=True, authorized_keys=keys)
    try:
        adb.connect(trusted.serial)
        r = adb.run("-s", trusted.serial, "shell", "echo", "trusted")
        assert r.stdout == b"trusted\n"
    finally:
        adb.run("disconnect", trusted.serial)
    other = tmp_path / "other_keys"
    from adb_shell.auth.keygen import keygen

    keygen(str(tmp_path / "otherkey"))
    other.write_text((tmp_path / "otherkey.pub").read_text())
    stranger = emulator_factory(auth=True, authorized_keys=other)
    try:
        r = adb.run("connect", stranger.serial, timeout=30)
        assert r.returncode == 0  # adb connect exits 0 even when it fails ...
        assert b"failed to authenticate" in r.stdout + r.stderr  # ... the output says so
        assert adb.wait_state(stranger.serial, "unauthorized", timeout=5)
        r = adb.run("-s", stranger.serial, "shell", "echo", "no")
        assert r.returncode != 0 and b"unauthorized" in r.stderr
    finally:
        adb.run("disconnect", stranger.serial)


def test_full_phone_push_fails_cleanly(adb, emulator_factory, tmp_path):
    small = emulator_factory(storage_bytes=2 * 1024 * 1024)
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(3 * 1024 * 1024))
    try:
        adb.connect(small.serial)
        r = adb.run("-s", small.serial, "push", str(big), "/data/local/tmp/big.bin")
        assert r.returncode != 0
        assert b"No space left on device" in r.stdout + r.stderr
        assert list(small.fs.resolve("/data/local/tmp").iterdir()) == []
        r = adb.run("-s", small.serial, "shell", "df", "/data/local/tmp")
        assert r.returncode == 0 and b" /data\n" in r.stdout
        # Something that fits still goes through.
        (tmp_path / "ok.bin").write_bytes(b"y" * 1000)
        r = adb.run("-s", small.serial, "push", str(tmp_path / "ok.bin"), "/data/local/tmp/ok.bin")
        assert r.returncode == 0, _text(r)
    finally:
        adb.run("disconnect", small.serial)


def test_pushed_symlinks_stay_inside_the_sandbox(adb, adb_serial, emulator, tmp_path):
    tree = tmp_path / "links"
    tree.mkdir()
    (tree / "f").write_bytes(b"data\n")
    os.symlink("f", tree / "rel")
    os.symlink("/etc/passwd", tree / "abs")  # on the device this means the device's /etc/passwd
    r = adb.run("-s", adb_serial, "push", str(tree), "/data/local/tmp/links")
    assert r.returncode == 0, _text(r)
    r = adb.run("-s", adb_serial, "shell", "cat /data/local/tmp/links/rel; readlink /data/local/tmp/links/abs")
    assert r.stdout == b"data\n/etc/passwd\n"
    host_passwd = Path("/etc/passwd").read_bytes()
    r = adb.run("-s", adb_serial, "shell", "cat /data/local/tmp/links/abs")
    # the device's own /etc/passwd (its users for toybox's id and ls -l), never the host's
    assert r.stdout != host_passwd and (r.returncode == 1 or b"shell:x:2000:" in r.stdout)
    back = tmp_path / "back"
    adb.run("-s", adb_serial, "pull", "/data/local/tmp/links", str(back))
    assert (back / "rel").read_bytes() == b"data\n"
    assert not (back / "abs").exists() or (back / "abs").read_bytes() != host_passwd
    assert not (emulator.fs.root / "etc").exists()
