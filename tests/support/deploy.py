"""Deploy and bench helpers: synthetic bundles, a contract-following runner without a model, a
file_pieces that corrupts what it sends, a spy on deploy's host hashing, and a Device opener for
either transport."""

from __future__ import annotations

import os
import time
from pathlib import Path, PurePosixPath

DEV_DIR = PurePosixPath("/data/local/tmp/g4m-test")


def make_bundle(root: Path, name: str = "synthetic", size: int = 2 << 20, recipe: str = "dynamic_wi8_afp32",
                seed: int = 0) -> Path:
    """A bundle directory with a random model file and a real manifest (no conversion needed)."""
    from converters.bundle import write_manifest

    d = root / name
    d.mkdir(parents=True, exist_ok=True)
    rnd = bytes((i * 131 + seed * 7 + 17) % 251 for i in range(4096))
    with open(d / "model.litertlm", "wb") as f:
        f.write((rnd * (size // len(rnd) + 1))[:size])
    write_manifest(d, {"name": name, "variant": "e2b", "recipe": {"name": recipe}})
    return d


def fake_runner(decode: float = 100.0, prefill: float = 400.0, delay: float = 0.0, on_call=None):
    """An emulator runner that follows the contract without a model: fixed figures, optional delay."""
    from on_device.runner_contract import RunnerResult, format_result, parse_flags

    calls = {"n": 0}

    def run(argv, ctx) -> int:
        calls["n"] += 1
        inv = parse_flags(argv[1:])
        if not ctx.resolve(str(inv.model_path)).is_file():
            ctx.stderr(b"litert_lm_main: ERROR: NOT_FOUND: cannot open model file\n")
            return 1
        if on_call:
            on_call(calls["n"])
        if delay:
            time.sleep(delay)
        n = calls["n"]
        ctx.stdout(format_result(RunnerResult(init_s=0.5, ttft_s=0.1 * n, prefill_tps=prefill + n,
                                              decode_tps=decode + n, peak_mem_mb=300.0)).encode())
        return 0

    run.calls = calls
    return run


def corrupting_pieces(real, *, piece: int, offset: int, mask: int):
    """A file_pieces that flips bits `mask` at `offset` of piece `piece` of the model after the host
    read it (and re-checksums it, so only the device's sha256 can catch it)."""
    def corrupting(local, size, checksum=None):
        for i, (data, n, _check) in enumerate(real(local, size, checksum)):
            if i == piece and local.name == "model.litertlm":
                data[offset] ^= mask
            yield data, n, (checksum(data) if checksum else 0)
    return corrupting


def corrupting_batches(real, *, piece: int, offset: int, mask: int):
    """As corrupting_pieces, for the sync path's byte stream (sync_send_batches): `offset` counts
    from the start of the batch, so past the SEND and first DATA headers for piece 0."""
    def corrupting(local, device_path, mode, mtime, max_batch, checksum=None):
        for i, (data, n, _check) in enumerate(real(local, device_path, mode, mtime, max_batch, checksum)):
            if i == piece and local.name == "model.litertlm":
                data[offset] ^= mask
            yield data, n, (checksum(data) if checksum else 0)
    return corrupting


def names_after_part_cleanup(directory, timeout_s: float = 20) -> list[str]:
    """The names in a device directory once no temporary push file is left, or at the timeout: a cut
    session's device command removes its temporary file when its host goes away, and on a loaded
    machine that can land after the resumed push (seen in a full run)."""
    from sdk_tools.deploy import PART_SUFFIX

    deadline = time.monotonic() + timeout_s
    while any(n.endswith(PART_SUFFIX) for n in os.listdir(directory)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return os.listdir(directory)


def spy_host_hashes(monkeypatch) -> list[str]:
    """The names of the files deploy hashes on the host from here on (sha256_file's calls)."""
    import sdk_tools.deploy as dep

    reads: list[str] = []
    real = dep.sha256_file
    monkeypatch.setattr(dep, "sha256_file", lambda p, *a: (reads.append(os.path.basename(p)), real(p, *a))[1])
    return reads


def device_opener(transport: str, request, emu):
    """A callable opening a Device on `emu`: "tcp" (adb-shell TCP) or "server" (the real adb server,
    connected here through the session's `adb` fixture)."""
    from sdk_tools.devices.server import AdbServer, ServerDevice
    from sdk_tools.devices.tcp import TcpDevice

    if transport == "server":
        adb = request.getfixturevalue("adb")
        adb.connect(emu.serial)
        server = AdbServer(port=int(adb.env["ANDROID_ADB_SERVER_PORT"]))
        return lambda: ServerDevice(emu.serial, server)
    return lambda: TcpDevice(emu.serial)
