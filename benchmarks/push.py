"""Push throughput to the reference emulator: `gemma4-mobile push` (adb-shell TCP and through the adb
server) next to Debian's `adb push` of the same files, alternating, several rounds in one run; a
re-push of the unchanged bundle against the tool's floor; CPU seconds per GiB of each process.

    python benchmarks/push.py [--bundle DIR | --size-mib 256] [--rounds 3] [--repush-rounds N]
                              [--profile galaxy-s24] [--link-mb-s 40]

Rows: Debian's `adb push`; `gemma4-mobile push` over adb-shell TCP and through the adb server, as
it pushes to an emulator (ro.boot.qemu=1: sync SEND, then one sha256sum-check-rename command per
file); and both again with GEMMA4_MOBILE_PUSH_SYNC=0, the path a phone gets (streamed through exec:,
written and hashed on the device in one pass).

With --link-mb-s the emulator's link runs at that rate (emulator start --link-mb-s), as a phone's
cable does (USB 2 carries about 40 MB/s of adb, USB 3 a few hundred): the link, not the two host
cores shared by host and device, is then the bound, and the streamed rows show whether hashing on
the device hides behind the transfer.

Each figure is the wall time of the whole command (process start, transfer, sha256 on the device,
rename), MB = 10^6 bytes of bundle pushed (model + runner). Every `gemma4-mobile push` starts with
an empty state directory, as for a new user (the host does not hash what it pushes: the device's
sha256 against the manifest is the proof); the re-push reuses the state of the full push before it. Each round
runs the three pushes in a rotated order into fresh directories (removed, untimed, afterwards).

CPU seconds per GiB pushed, per process: the client (`adb` or `gemma4-mobile`, this script's
children), the adb server (its /proc stat), the emulator's own threads and the device commands it
ran (the emulator's waited-for children: mksh, dd, sha256sum ...). Kernel threads (the loop device
under the emulator's /data) belong to none of them. The machine may be shared: medians and the
per-round ratio are printed next to the best.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import (adb_server, background_emulator, clean_env, free_port,  # noqa: E402
                                g4m_command, require_adb, run_timed, scratch_dir)


def _synthetic_bundle(root: Path, size_mib: int) -> Path:
    from converters.bundle import write_manifest

    d = root / "bundle"
    d.mkdir()
    with open(d / "model.litertlm", "wb") as f:
        for _ in range(size_mib):
            f.write(os.urandom(1 << 20))
    write_manifest(d, {"name": "push-bench", "variant": "synthetic", "recipe": {"name": "none"}})
    return d


def _proc_cpu(pid: int | None) -> tuple[float, float]:
    """(own, waited-for children) CPU seconds of a process; zeros once it is gone."""
    if not pid:
        return 0.0, 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0.0
    hz = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / hz, (int(fields[13]) + int(fields[14])) / hz


def _adb_server_pid(port: str) -> int | None:
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            cmd = (p / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"fork-server" in cmd and any(a.endswith(f"tcp:{port}".encode()) for a in cmd):
            return int(p.name)
    return None


class Meter:
    """CPU seconds of the client, the adb server, the emulator and the device commands over a call."""

    def __init__(self, emulator_pid: int, server_pid: int | None):
        self.emu, self.srv = emulator_pid, server_pid

    def snap(self) -> tuple[float, float, float, float]:
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        emu_own, emu_children = _proc_cpu(self.emu)
        return ru.ru_utime + ru.ru_stime, _proc_cpu(self.srv)[0], emu_own, emu_children

    def measure(self, fn):
        a = self.snap()
        wall, out = fn()
        b = self.snap()
        return wall, out, tuple(y - x for x, y in zip(a, b))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, help="a bundle directory (default: a synthetic one of --size-mib)")
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds of the pushes (and re-pushes)")
    ap.add_argument("--repush-rounds", type=int, help="re-pushes timed against the floor (default: --rounds)")
    ap.add_argument("--profile", default="galaxy-s24")
    ap.add_argument("--link-mb-s", type=float,
                    help="the emulator's link rate in MB/s (e.g. 40: USB 2), where the link, not the host's CPU, "
                         "is the bound; default: loopback speed")
    a = ap.parse_args()
    adb_bin = require_adb()
    if adb_bin is None:
        return 2
    g4m = g4m_command()

    with scratch_dir("g4m-push-bench-") as work:
        env = clean_env(("ANDROID_", "ADB_", "G4M_", "GEMMA4_MOBILE_"), HOME=str(work / "home"),
                        GEMMA4_MOBILE_HOME=str(work / "g4m"), ANDROID_ADB_SERVER_PORT=str(free_port()), ADB_MDNS="0",
                        GEMMA4_MOBILE_CONFIG=str(work / "none.json"))
        (work / "home").mkdir()
        os.environ.update(GEMMA4_MOBILE_HOME=env["GEMMA4_MOBILE_HOME"])
        from converters.bundle import read_manifest
        from on_device.runner_contract import emulator_runner_bytes

        bundle = a.bundle or _synthetic_bundle(work, a.size_mib)
        manifest = read_manifest(bundle)
        model = bundle / manifest["main_model"]
        runner = work / "litert_lm_main"
        runner.write_bytes(emulator_runner_bytes())
        runner.chmod(0o755)
        payload = model.stat().st_size + runner.stat().st_size
        full = payload + (bundle / "manifest.json").stat().st_size
        gib = payload / (1 << 30)
        homes = iter(range(1 << 30))

        with background_emulator(a.profile, a.link_mb_s) as rec, adb_server(adb_bin, env, rec.serial) as adb:
            meter = Meter(rec.pid, _adb_server_pid(env["ANDROID_ADB_SERVER_PORT"]))
            link = f", link {a.link_mb_s:g} MB/s" if a.link_mb_s else ""
            print(f"emulator {rec.serial} ({a.profile}{link}, pid {rec.pid}); bundle {bundle} "
                  f"({payload / 1e6:.1f} MB with the runner); {os.cpu_count()} CPUs, load "
                  f"{os.getloadavg()[0]:.2f} at the start")
            # gemma4-mobile over adb-shell TCP: the adb server lists the serial, so hide the server (a port
            # nobody listens on) to make discovery use the direct TCP path.
            env_tcp = dict(env, ANDROID_ADB_SERVER_PORT=str(free_port()))

            def g4m_push(device_dir: str, base: dict[str, str], home: str | None = None):
                e = dict(base, GEMMA4_MOBILE_HOME=home or str(work / f"g4m-{next(homes)}"))
                dt, r = run_timed([*g4m, "push", str(bundle), "--device", rec.serial, "--runner", str(runner),
                                   "--device-dir", device_dir, "--json"], e, what="gemma4-mobile push")
                return dt, json.loads(r.stdout)["deployments"][rec.serial]

            def adb_push(device_dir: str):
                run_timed([adb_bin, "-s", rec.serial, "shell", "mkdir", "-p", device_dir], env)
                return run_timed([adb_bin, "-s", rec.serial, "push", str(model), str(runner), device_dir + "/"], env,
                                 what="adb push")

            methods = {"adb push": lambda d: adb_push(d),
                       "gemma4-mobile tcp": lambda d: g4m_push(d, env_tcp),
                       "gemma4-mobile adb-server": lambda d: g4m_push(d, env),
                       # The path a phone gets (the emulator, ro.boot.qemu=1, gets sync SEND and then
                       # sha256sum): each file streamed through exec:, written and hashed in one pass.
                       "g4m tcp, streamed": lambda d: g4m_push(d, dict(env_tcp, GEMMA4_MOBILE_PUSH_SYNC="0")),
                       "g4m adb-server, streamed": lambda d: g4m_push(d, dict(env, GEMMA4_MOBILE_PUSH_SYNC="0"))}
            names = list(methods)
            walls: dict[str, list[float]] = {n: [] for n in names}
            cpus: dict[str, list[tuple]] = {n: [] for n in names}
            inner: dict[str, list[float]] = {n: [] for n in names}  # deploy() itself, without process start
            for rnd in range(a.rounds):
                order = names[rnd % len(names):] + names[:rnd % len(names)]
                for name in order:
                    d = f"/data/local/tmp/bench-{rnd}-{names.index(name)}"
                    wall, out, cpu = meter.measure(lambda: methods[name](d))
                    if name != "adb push":
                        assert out["bytes_pushed"] == full, out["bytes_pushed"]
                        inner[name].append(out["seconds"])
                    walls[name].append(wall)
                    cpus[name].append(cpu)
                    adb("-s", rec.serial, "shell", "rm", "-rf", d)

            # Re-push of the unchanged bundle (TCP): the stamp proves it; nothing is sent or hashed.
            # The floor: the tool's own start plus one shell round trip to the same emulator.
            re_home = str(work / "g4m-repush")
            g4m_push("/data/local/tmp/bench-re", env_tcp, re_home)
            t_re, t_help, t_true = [], [], []
            for _ in range(a.repush_rounds or a.rounds):
                dt, dep_re = g4m_push("/data/local/tmp/bench-re", env_tcp, re_home)
                assert dep_re["bytes_pushed"] == 0
                t_re.append(dt)
                t_help.append(run_timed([*g4m, "--help"], env)[0])
                t_true.append(run_timed([adb_bin, "-s", rec.serial, "shell", "true"], env)[0])

        mb = payload / 1e6
        print(f"\n{a.rounds} rounds, {mb:.1f} MB each; MB/s best / median; ratio = adb push wall / this wall "
              "(per round: median, min..max); CPU s per GiB (median): client, adb server, emulator, device cmds")
        for name in names:
            w = walls[name]
            ratios = [wa / wx for wa, wx in zip(walls["adb push"], w)]
            c = [statistics.median(x[i] for x in cpus[name]) / gib for i in range(4)]
            ratio = "" if name == "adb push" else (
                f"ratio {min(walls['adb push']) / min(w):.2f}x best, {statistics.median(ratios):.2f}x median "
                f"({min(ratios):.2f}..{max(ratios):.2f})")
            print(f"  {name:25} {mb / min(w):7.1f} / {mb / statistics.median(w):7.1f} MB/s  "
                  f"({', '.join(f'{x:.2f}' for x in w)} s)  {ratio}")
            if inner[name]:
                print(f"  {'':25} of which deploy() {statistics.median(inner[name]):.2f} s median "
                      f"({mb / statistics.median(inner[name]):.1f} MB/s): the rest is process start and connecting")
            print(f"  {'':25} cpu s/GiB: client {c[0]:.2f}, adb server {c[1]:.2f}, emulator {c[2]:.2f}, "
                  f"device {c[3]:.2f}, total {sum(c):.2f}")
        floor = [h + t for h, t in zip(t_help, t_true)]
        print(f"  re-push unchanged (tcp)   {statistics.median(t_re):.2f} s median "
              f"({', '.join(f'{x:.2f}' for x in t_re)}) "
              f"= {statistics.median(t_re) / statistics.median(walls['gemma4-mobile tcp']):.3f} of a full push, "
              f"{statistics.median([r / f for r, f in zip(t_re, floor)]):.2f}x the floor "
              f"(median {statistics.median(t_help):.2f} s `gemma4-mobile --help` + "
              f"{statistics.median(t_true):.3f} s `adb shell true`)")
        return 0


if __name__ == "__main__":
    sys.exit(main())
