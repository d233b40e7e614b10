"""Attacks on the reference emulator's sandbox and on bundle manifests (issue 11, security), each
reproduced the way an attacker would: real ADB clients (adb-shell) on loopback, racing each other,
bounded in iterations and time. Each asserts that nothing outside the emulator's root is written,
read, listed or changed."""

from __future__ import annotations

import os
import stat
import threading
import time
from pathlib import Path

import pytest

from on_device.emulator.fs import LINK_PREFIX

from support.cli import cli
from support.deploy import make_bundle
from support.emulator import adb_shell_client, device_file, make_emulator

ITERATIONS = int(os.environ.get("GEMMA4_MOBILE_RACE_ROUNDS", "300"))  # client round trips per racing client
SECONDS = 20.0  # and never longer than this
TMP = "/data/local/tmp"
SECRET = b"HOST-SECRET-7d3f9a"


@pytest.fixture
def host(tmp_path):
    """Files of the host user outside the emulator's root: what an attacker wants."""
    d = tmp_path / "host"
    d.mkdir()
    (d / "target.txt").write_bytes(b"host original\n")
    (d / "secret.txt").write_bytes(SECRET + b"\n")
    os.chmod(d / "target.txt", 0o644)
    os.utime(d / "target.txt", (1_000_000_000, 1_000_000_000))
    return d


def _snapshot(d: Path) -> dict[str, tuple[bytes, int, float]]:
    return {p.name: (p.read_bytes(), stat.S_IMODE(p.stat().st_mode), p.stat().st_mtime) for p in sorted(d.iterdir())}


def race(port: int, victim, attacker, setup: str = "") -> list:
    """Run `victim(dev)` and `attacker(dev)` in loops on two separate ADB connections at once,
    ITERATIONS round trips each or SECONDS, whichever ends first; returns the victim's results."""
    a, b = adb_shell_client(port), adb_shell_client(port)
    if setup:
        a.shell(setup)
    results: list = []
    errors: list[BaseException] = []
    deadline = time.monotonic() + SECONDS
    start = threading.Barrier(2)

    def loop(dev, fn, sink):
        try:
            start.wait()
            for _ in range(ITERATIONS):
                if time.monotonic() > deadline:
                    break
                r = fn(dev)
                if sink is not None:
                    sink.append(r)
        except BaseException as e:  # noqa: BLE001 - surfaced below
            errors.append(e)

    threads = [threading.Thread(target=loop, args=(a, victim, results)),
               threading.Thread(target=loop, args=(b, attacker, None))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(SECONDS + 30)
    a.close()
    b.close()
    assert not errors, errors
    assert len(results) >= 20, "the race ran too few rounds to mean anything"
    return results


def _swap_file(path: str, link_to: Path) -> str:
    # Between `rm` and `ln` the name is free: a check-then-open victim passes its check there.
    one = f"rm -f {path}; ln -s {link_to} {path}; rm -f {path}; echo decoy > {path}"
    return "; ".join([one] * 4)


def _swap_dir(path: str, link_to: Path) -> str:
    one = f"rm -rf {path}; mkdir {path}; echo decoy > {path}/secret.txt; rm -rf {path}; ln -s {link_to} {path}"
    return "; ".join([one] * 4)


# ---- 1. symlink-swap races ------------------------------------------------------------------------
@pytest.mark.slow
def test_shell_write_race_never_writes_outside_the_root(emulator_factory, host):
    emu = emulator_factory()
    before = _snapshot(host)
    f, d = f"{TMP}/w/f", f"{TMP}/w/d"
    victim = "; ".join([f"echo PWNED > {f}", f"echo PWNED >> {f}", f"echo PWNED > {d}/target.txt",
                        f"echo PWNED > {d}/new.txt", f"touch {f} {d}/touched.txt", f"chmod 666 {f} {d}/target.txt",
                        f"cp {TMP}/w/src {f}", f"cp {TMP}/w/src {d}/copied.txt", f"mkdir {d}/made",
                        f"rm -f {d}/target.txt", f"rm -rf {d}/secret.txt", f"mv {d}/secret.txt {TMP}/w/moved",
                        f"mv {TMP}/w/src2 {d}/moved.txt; echo src > {TMP}/w/src2"] * 2)
    attacker = _swap_file(f, host / "target.txt") + "; " + _swap_dir(d, host)
    race(emu.port, lambda dev: dev.shell(victim), lambda dev: dev.shell(attacker),
         setup=f"mkdir -p {TMP}/w && echo src > {TMP}/w/src && echo src > {TMP}/w/src2")
    assert _snapshot(host) == before


@pytest.mark.slow
def test_shell_read_race_never_reads_outside_the_root(emulator_factory, host):
    emu = emulator_factory()
    f, d = f"{TMP}/r/f", f"{TMP}/r/d"
    victim = "; ".join([f"cat {f}", f"cat {d}/secret.txt", f"sha256sum {f}", f"ls {d}", f"ls -l {d}/secret.txt",
                        f"stat -c %s {d}/secret.txt", f"cp {f} {TMP}/r/copy; cat {TMP}/r/copy"] * 2) + " 2>&1"
    attacker = _swap_file(f, host / "secret.txt") + "; " + _swap_dir(d, host)
    import hashlib

    digest = hashlib.sha256(SECRET + b"\n").hexdigest()
    outs = race(emu.port, lambda dev: dev.shell(victim), lambda dev: dev.shell(attacker), setup=f"mkdir -p {TMP}/r")
    text = "".join(outs)
    assert SECRET.decode() not in text and digest not in text
    assert "target.txt" not in text  # a listing of the host directory
    assert f"{len(SECRET) + 1}\n" not in text.replace("decoy", "")  # stat of the host file


@pytest.mark.slow
def test_sync_recv_and_list_race_never_read_outside_the_root(emulator_factory, host, tmp_path):
    emu = emulator_factory()
    f, d = f"{TMP}/s/f", f"{TMP}/s/d"
    got = tmp_path / "pulled"

    def victim(dev):
        seen = []
        for path in (f, f"{d}/secret.txt"):
            try:
                dev.pull(path, str(got))
                seen.append(got.read_bytes())
            except Exception:  # the name is mid-swap: a refusal is fine, a leak is not
                pass
        try:
            seen.append(repr(dev.list(d)).encode())
            seen.append(repr(dev.stat(f"{d}/target.txt")).encode())
        except Exception:
            pass
        return b"|".join(seen)

    attacker = _swap_file(f, host / "secret.txt") + "; " + _swap_dir(d, host)
    outs = race(emu.port, victim, lambda dev: dev.shell(attacker), setup=f"mkdir -p {TMP}/s")
    blob = b"".join(outs)
    assert SECRET not in blob
    assert b"target.txt" not in blob
    assert b"1000000000" not in blob  # the host file's mtime, had STAT reached it


@pytest.mark.slow
def test_sync_send_race_never_writes_outside_the_root(emulator_factory, host, tmp_path):
    emu = emulator_factory()
    before = _snapshot(host)
    src = tmp_path / "payload"
    src.write_bytes(b"PWNED\n")
    f, d = f"{TMP}/p/f", f"{TMP}/p/d"

    def victim(dev):
        for path in (f, f"{d}/target.txt", f"{d}/new.txt", f"{d}/sub/deeper.txt"):
            try:
                dev.push(str(src), path)
            except Exception:
                pass
        return True

    attacker = _swap_file(f, host / "target.txt") + "; " + _swap_dir(d, host)
    race(emu.port, victim, lambda dev: dev.shell(attacker), setup=f"mkdir -p {TMP}/p")
    assert _snapshot(host) == before


def test_device_symlinks_never_resolve_on_the_host(emulator_factory, host, tmp_path):
    """A device link holds the device's own target (the device kernel follows it, readlink shows
    it, as on a phone) and lives where no host process reaches it: /data is mounted in the
    device's namespace only. Absolute, relative with too many `..`, and one pushed over sync
    (S_IFLNK); the device resolves each inside its own root, like a chroot."""
    emu = emulator_factory()
    dev = adb_shell_client(emu.port)
    try:
        out = dev.shell(f"cd {TMP} && ln -s {host}/secret.txt abs && ln -s ../../../../../../../..{host}/secret.txt rel"
                        f" && ln -s {host} dir && ls -l abs; echo rc=$?")
        assert out.rstrip().endswith("rc=0") and f"abs -> {host}/secret.txt" in out
        link_src = tmp_path / "linktarget"
        link_src.write_bytes(f"{host}/secret.txt\0".encode())
        # adb sends a symlink as SEND path,mode with S_IFLNK and the target as its data.
        dev.push(str(link_src), f"{TMP}/pushed", st_mode=stat.S_IFLNK | 0o777)
        assert dev.shell(f"readlink {TMP}/pushed").strip() == f"{host}/secret.txt"
        # The host's namespace has no device /data: not the links, not even their names.
        on_host = emu.fs.root / "data" / "local" / "tmp"
        for name in ("abs", "rel", "dir", "pushed"):
            assert not os.path.lexists(on_host / name)
        with open("/proc/self/mountinfo") as f:
            assert not [ln for ln in f if ln.split()[4].startswith(str(emu.fs.root))]
        # The device (and the emulator's own sync) resolve the targets inside the device root.
        assert SECRET.decode() not in dev.shell(f"cat {TMP}/abs {TMP}/rel {TMP}/pushed {TMP}/dir/secret.txt 2>&1")
        for name in ("abs", "rel", "pushed"):
            with pytest.raises(Exception):
                dev.pull(f"{TMP}/{name}", str(tmp_path / "got"))
        dev.shell(f"mkdir -p {TMP}/real && echo inside > {TMP}/real/x && ln -s {TMP}/real {TMP}/in")
        link_src.write_bytes(b"real/x\0")
        dev.push(str(link_src), f"{TMP}/relpushed", st_mode=stat.S_IFLNK | 0o777)
        assert dev.shell(f"cat {TMP}/in/x {TMP}/relpushed; readlink {TMP}/relpushed") == "inside\ninside\nreal/x\n"
    finally:
        dev.close()


def test_links_from_older_roots_are_rewritten_on_start(tmp_path, host):
    """Links of a root from before: a raw one in /data (the interpreter's era, before issue 11)
    stays the device's; issue 11's host-unresolvable form in /data, which the device kernel
    cannot follow, becomes the device target; a raw one outside /data (host-visible) becomes the
    host-unresolvable form."""
    root = tmp_path / "root"
    tmp = root / "data" / "local" / "tmp"
    tmp.mkdir(parents=True)
    (root / "system").mkdir()
    (root / "vendor").mkdir()
    (root / "system" / "build.prop").write_text("ro.product.model=old\n")  # a root made before markers
    os.symlink(str(host / "secret.txt"), tmp / "old")
    (tmp / "real").write_text("real\n")
    os.symlink(LINK_PREFIX + "/data/local/tmp/real", tmp / "issue11")
    os.symlink(str(host / "secret.txt"), root / "vendor" / "outside")
    emu = make_emulator(root)
    try:
        assert os.readlink(root / "vendor" / "outside") == LINK_PREFIX + str(host / "secret.txt")
        assert not os.path.lexists(tmp / "old")  # in the device's /data now, off the host
        dev = adb_shell_client(emu.port)
        try:
            out = dev.shell(f"readlink {TMP}/old {TMP}/issue11; cat {TMP}/issue11; cat /vendor/outside 2>&1")
            assert out.splitlines()[:3] == [str(host / "secret.txt"), "/data/local/tmp/real", "real"]
            assert SECRET.decode() not in out
        finally:
            dev.close()
    finally:
        emu.stop()


def test_runner_model_path_never_leaves_the_root(emulator_factory, tmp_path, runner_file, host):
    """The runner opens its model by a directory-fd walk in the sandbox: a device link to a host
    model file (absolute or relative) is not a way to make the emulator load host files."""
    emu = emulator_factory()
    (host / "model.litertlm").write_bytes(b"LITERTLM" + b"\0" * 64)
    dev = adb_shell_client(emu.port)
    try:
        dev.push(str(runner_file), f"{TMP}/runner", st_mode=stat.S_IFREG | 0o755)
        dev.shell(f"ln -s {host}/model.litertlm {TMP}/abs.litertlm; "
                  f"ln -s ../../../../../../../../..{host}/model.litertlm {TMP}/rel.litertlm")
        for name in ("abs", "rel"):
            out = dev.shell(f"{TMP}/runner --backend=cpu --model_path={TMP}/{name}.litertlm --input_prompt=hi 2>&1; "
                            "echo rc=$?")
            assert "NOT_FOUND: cannot open model file" in out and out.rstrip().endswith("rc=1"), out
    finally:
        dev.close()


# ---- 2. the engine's weight cache ------------------------------------------------------------------
@pytest.mark.usefixtures("isolated_adb_key")
def test_runner_never_writes_through_a_planted_cache_link(emulator_factory, e2b_int8_bundle, runner_file, host):
    """LiteRT-LM by default writes `<model>_<mtime>_<size>.xnnpack_cache` next to the model,
    following symlinks. A client plants that name (mtime -1..+1, as the host may round) as a link to
    a host file; running the model must not touch it, nor write any cache on the device."""
    from gemma4_common.shell import join
    from on_device.runner_contract import RunnerInvocation, build_argv
    from sdk_tools.deploy import deploy
    from sdk_tools.devices.tcp import TcpDevice

    emu = emulator_factory()
    dev = TcpDevice(emu.serial)
    try:
        dep = deploy(dev, e2b_int8_bundle, runner=runner_file, device_dir="/data/local/tmp/g4m")
        model = str(dep.model_path)
        size, mtime = dev.shell_result(join(["stat", "-c", "%s %Y", model])).stdout.decode().split()
        before = _snapshot(host)
        names = [f"{model}_{int(mtime) + d}_{size}.xnnpack_cache" for d in (-1, 0, 1)]
        for n in names:
            dev.check_shell(join(["ln", "-s", str(host / "target.txt"), n]), "planting a link")
        r = dev.shell_result(join(build_argv(dep.runner_path, RunnerInvocation(
            model_path=dep.model_path, input_prompt="hi", max_output_tokens=4, apply_prompt_template=False))))
        assert r.rc == 0, r.stderr
        assert _snapshot(host) == before
        listing = dev.shell_result(join(["ls", "-a", str(dep.bundle_dir)])).stdout.decode().split()
        assert sorted(n for n in listing if n.endswith(".xnnpack_cache")) == sorted(n.rsplit("/", 1)[1] for n in names)
        for n in names:  # still the planted links, never written through
            assert dev.shell_result(join(["readlink", n])).stdout.decode().strip() == str(host / "target.txt")
    finally:
        dev.close()


@pytest.mark.usefixtures("isolated_adb_key")
def test_runner_weight_cache_lives_off_the_device_one_per_model_version(emulator_factory, e2b_int8_bundle,
                                                                         runner_file, tmp_path, monkeypatch):
    """The emulator's runner keeps LiteRT-LM's weight cache (what litert_lm_main on a phone keeps next
    to the model, and what `litert-lm benchmark` uses) in a host directory of the emulator's state,
    never on the device: reused by the next run of the same file, and a new one for a rewritten file
    (LiteRT-LM names a cache by file name, mtime and size only)."""
    from gemma4_common.shell import join
    from on_device.runner_contract import RunnerInvocation, build_argv
    from sdk_tools.deploy import deploy
    from sdk_tools.devices.tcp import TcpDevice

    monkeypatch.setenv("GEMMA4_MOBILE_HOME", str(tmp_path / "home"))
    emu = emulator_factory()
    caches = tmp_path / "home" / "engine-cache"
    dev = TcpDevice(emu.serial)
    try:
        dep = deploy(dev, e2b_int8_bundle, runner=runner_file, device_dir="/data/local/tmp/g4m")
        argv = join(build_argv(dep.runner_path, RunnerInvocation(
            model_path=dep.model_path, input_prompt="hi", max_output_tokens=4, apply_prompt_template=False)))

        def run() -> list[Path]:
            r = dev.shell_result(argv)
            assert r.rc == 0, r.stderr
            return sorted(p.parent for p in caches.glob("*/*.xnnpack_cache"))

        first = run()
        assert len(first) == 1 and next(first[0].iterdir()).stat().st_size > 0
        # Reused: the same directory. (LiteRT-LM's own file name in it holds the mtime as it computes
        # it, which can come out one second apart: a miss then, and the older file is dropped.)
        assert run() == first
        listing = dev.shell_result(join(["ls", "-a", str(dep.bundle_dir)])).stdout.decode().split()
        assert not [n for n in listing if n.endswith(".xnnpack_cache")]  # nothing on the device
        # The same bytes written again (same name, size and mtime, new ctime): a cache of its own.
        model = str(dep.model_path)
        dev.check_shell(f"cp {model} {model}.new && touch -r {model} {model}.new && mv {model}.new {model}",
                        "rewriting the model")
        second = run()
        assert len(second) == 2 and first[0] in second
    finally:
        dev.close()


def test_host_run_writes_no_cache_into_the_bundle(e2b_int8_bundle, tmp_path):
    """`gemma4-mobile run` must not leave a 2.8 MB .xnnpack_cache in the user's bundle directory."""
    import shutil

    bundle = tmp_path / "bundle"
    shutil.copytree(e2b_int8_bundle, bundle, ignore=shutil.ignore_patterns("*.xnnpack_cache"))
    before = sorted(p.name for p in bundle.iterdir())
    r = cli("run", bundle, "--prompt", "hi", "--max-tokens", "4")
    assert r.code == 0, r.err
    assert sorted(p.name for p in bundle.iterdir()) == before


# ---- 3. manifest path traversal -------------------------------------------------------------------
def _evil_bundle(tmp_path: Path, edit) -> Path:
    """A bundle whose manifest was edited by hand (what an attacker ships): `edit(manifest)`."""
    import json

    b = make_bundle(tmp_path / "bundles", size=64 << 10)
    m = json.loads((b / "manifest.json").read_text())
    edit(m)
    (b / "manifest.json").write_text(json.dumps(m))
    return b


def _secret_entry(host: Path) -> dict:
    from gemma4_common.fsutil import sha256_file

    p = host / "secret.txt"
    return {"sha256": sha256_file(p), "size": p.stat().st_size}


def _traversals(host: Path, tmp_path: Path):
    rel = os.path.relpath(host / "secret.txt", tmp_path / "bundles" / "synthetic")
    entry = _secret_entry(host)

    def main_and_file(name):
        def edit(m):
            m["files"][name] = entry
            m["main_model"] = name
        return edit

    def file_only(name):
        def edit(m):
            m["files"][name] = entry
        return edit

    def npu_model(name):
        def edit(m):
            m["files"][name] = entry
            m["npu"] = {"targets": [{"vendor": "qualcomm", "soc": "SM8650", "status": "compiled", "model": name}]}
        return edit

    return {"dotdot-main": main_and_file(rel), "absolute-main": main_and_file(str(host / "secret.txt")),
            "dotdot-file": file_only(rel), "absolute-file": file_only(str(host / "secret.txt")),
            "backslash": file_only("..\\..\\secret.txt"), "nul": file_only("model.litertlm\0x"),
            "npu-model": npu_model(rel)}


@pytest.mark.parametrize("case", ["dotdot-main", "absolute-main", "dotdot-file", "absolute-file", "backslash",
                                  "nul", "npu-model", "symlink-out"])
@pytest.mark.usefixtures("isolated_device_env")
def test_manifest_names_outside_the_bundle_are_refused(case, tmp_path, host, emulator_factory, runner_file):
    if case == "symlink-out":  # the name is clean; the file in the bundle is a link out of it
        def edit(m):
            m["files"]["model.litertlm"] = _secret_entry(host)
        b = _evil_bundle(tmp_path, edit)
        (b / "model.litertlm").unlink()
        os.symlink(host / "secret.txt", b / "model.litertlm")
    else:
        b = _evil_bundle(tmp_path, _traversals(host, tmp_path)[case])
    secret = _secret_entry(host)
    r = cli("inspect", b)
    assert r.code == 2 and r.err.startswith("error: ") and len(r.err.strip().splitlines()) == 1, (r.code, r.err)
    assert "not a valid bundle manifest" in r.err
    for leak in (secret["sha256"], SECRET.decode(), f"{secret['size']} B"):
        assert leak not in r.out + r.err
    emu = emulator_factory()
    r = cli("push", b, "--device", emu.serial, "--runner", runner_file)
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1, (r.code, r.err)
    dev = adb_shell_client(emu.port)
    try:  # refused before the device was touched: no directory made, no byte sent
        assert dev.shell(f"ls {TMP}") == ""
    finally:
        dev.close()


@pytest.mark.usefixtures("isolated_device_env")
def test_push_checks_local_hashes_before_the_device_accepts_a_file(tmp_path, emulator_factory, runner_file):
    """A manifest whose sha256 does not match the file: the device refuses it (its own sha256 of what
    arrived is not the manifest's), nothing reaches the final path, no temporary is left; once the
    host knows the file's hash, nothing is sent at all."""
    from sdk_tools.deploy import PART_SUFFIX, deploy
    from sdk_tools.devices.tcp import TcpDevice
    from gemma4_common.errors import UserError

    def edit(m):
        m["files"]["model.litertlm"]["sha256"] = "0" * 64
    b = _evil_bundle(tmp_path, edit)
    emu = emulator_factory()
    sent = []

    class Watching(TcpDevice):
        def _push(self, local, device_path, mode, progress):
            sent.append(local.name)
            return super()._push(local, device_path, mode, progress)

        def _exec_in(self, command, local, progress):
            sent.append(local.name)
            return super()._exec_in(command, local, progress)

    final = f"{TMP}/g4m/bundles/synthetic/model.litertlm"
    with Watching(emu.serial) as dev:
        with pytest.raises(UserError, match="does not match its manifest"):
            deploy(dev, b, runner=runner_file, device_dir=f"{TMP}/g4m")
        assert "model.litertlm" in sent  # sent unhashed: the device's check is what refuses it
        assert not device_file(emu, final).exists()
        assert not [n for n in os.listdir(device_file(emu, f"{TMP}/g4m/bundles/synthetic"))
                    if n.endswith(PART_SUFFIX)]
        sent.clear()
        with pytest.raises(UserError, match="does not match its manifest"):
            deploy(dev, b, runner=runner_file, device_dir=f"{TMP}/g4m")
        assert sent == []
    assert not device_file(emu, final).exists()


@pytest.mark.parametrize("case", ["binary", "list", "files-list", "size-str", "sha-int", "recipe-list",
                                  "no-files", "empty-files", "main-not-listed", "export-str"])
def test_malformed_manifests_are_one_line_errors(case, tmp_path):
    edits = {
        "files-list": lambda m: m.__setitem__("files", list(m["files"])),
        "size-str": lambda m: m["files"]["model.litertlm"].__setitem__("size", "12"),
        "sha-int": lambda m: m["files"]["model.litertlm"].__setitem__("sha256", 7),
        "recipe-list": lambda m: m.__setitem__("recipe", ["int8"]),
        "no-files": lambda m: m.pop("files"),
        "empty-files": lambda m: m.__setitem__("files", {}),
        "main-not-listed": lambda m: m.__setitem__("main_model", "other.litertlm"),
        "export-str": lambda m: m.__setitem__("export", "1024"),
    }
    b = _evil_bundle(tmp_path, edits.get(case, lambda m: None))
    if case == "binary":
        (b / "manifest.json").write_bytes(bytes(range(256)) * 4)
    elif case == "list":
        (b / "manifest.json").write_text("[1, 2, 3]")
    for args in (("inspect", b), ("run", b, "--prompt", "hi")):
        r = cli(*args)
        assert r.code == 2, (args, r.code, r.out, r.err)
        lines = r.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in r.err, r.err


# ---- the check-then-use window, hit exactly -----------------------------------------------------
def test_swap_right_after_the_walk_is_never_followed(tmp_path, host):
    """Deterministic version of the races above: a "client" swaps the name for a host-resolvable
    symlink (the old raw form) exactly between the walk and the use, every time. Each operation
    either works on the sandbox or fails; the host files never change and are never read."""
    from on_device.emulator import load_profile
    from on_device.emulator.fs import FsError, SandboxFS

    prof = load_profile("galaxy-s24")

    class Swapping(SandboxFS):
        armed = False

        def _walk(self, path, cwd="/", follow=True, lexical_tail=False):
            loc = super()._walk(path, cwd, follow, lexical_tail)
            if self.armed and loc.dirfd >= 0 and str(loc.dev.parent) == TMP:
                for target in (host / "target.txt", host):  # a file, and a directory
                    try:
                        if os.path.isdir(os.path.join(f"/proc/self/fd/{loc.dirfd}", loc.name)) and \
                                not os.path.islink(os.path.join(f"/proc/self/fd/{loc.dirfd}", loc.name)):
                            import shutil
                            shutil.rmtree(loc.name, dir_fd=loc.dirfd)
                        else:
                            os.unlink(loc.name, dir_fd=loc.dirfd)
                    except FileNotFoundError:
                        pass
                    os.symlink(str(target), loc.name, dir_fd=loc.dirfd)  # raw: the host would follow it
                    break
            return loc

    fs = Swapping(tmp_path / "root", prof.mounts, prof.storage_bytes)
    fs.ensure_layout()
    before = _snapshot(host)
    ops = {  # what the emulator itself does on device paths: sync (stat, list, pull, push) and the runner
        "read": lambda: fs.open_read(f"{TMP}/f").read(),
        "listdir": lambda: fs.listdir(f"{TMP}/d"),
        "list_stats": lambda: fs.list_stats(f"{TMP}/d"),
        "stat": lambda: fs.stat(f"{TMP}/f"),
        "upload": lambda: (lambda u: (u.write(b"PWNED"), u.commit(0o644)))(fs.new_file(f"{TMP}/f")),
        "upload-into-dir": lambda: (lambda u: (u.write(b"PWNED"), u.commit(0o644)))(fs.new_file(f"{TMP}/d/new")),
        "link": lambda: fs.replace_with_symlink("/x", f"{TMP}/f"),
        "mkdir": lambda: fs.mkdir(f"{TMP}/d"),
        "mkdir-p": lambda: fs.mkdir(f"{TMP}/d/sub/deeper", parents=True),
        "open_fd": lambda: os.read(fs.open_fd(f"{TMP}/f"), 100),
    }
    tmp = fs.host_path_unchecked(TMP)
    for name, op in ops.items():
        fs.armed = False
        for p in ("f", "d", "src"):
            q = tmp / p
            if q.is_dir() and not q.is_symlink():
                import shutil
                shutil.rmtree(q)
            elif q.is_symlink() or q.exists():
                q.unlink()
        (tmp / "f").write_bytes(b"device file")
        (tmp / "src").write_bytes(b"device src")
        (tmp / "d").mkdir()
        fs.armed = True
        try:
            got = op()
        except FsError:
            got = None
        finally:
            fs.armed = False
        assert _snapshot(host) == before, name
        text = repr(got)
        assert SECRET.decode() not in text and "target.txt" not in text and "host original" not in text, name
