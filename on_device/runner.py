"""The emulator's runner: the `litert_lm_main` contract (on_device/runner_contract.py) executed
on the host's LiteRT-LM CPU engine, in a child process so that its memory can be watched and
killed as a phone's low-memory killer would, and so that a crash never takes the emulator down.

`run_runner(argv, ctx)` is what the emulator's shell calls for a runner file; the child is
`python -m on_device.runner_worker`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat as statmod
import subprocess
import sys
import threading
import tempfile
import time
from pathlib import Path
from typing import Iterator

from on_device.runner_contract import (EXIT_BAD_FLAGS, EXIT_LMK_KILLED, EXIT_RUNTIME_ERROR, RUNNER_NAME,
                                       parse_flags)

POLL_S = 0.05
# LiteRT-LM's cache_dir value that turns its weight cache off. The emulator's runner never lets it
# write `<model>_<mtime>_<size>.xnnpack_cache` next to a device file (a planted symlink there would be
# followed, and the write would bypass the device's storage quota): the cache goes to a host
# directory of the emulator's own, one subdirectory per model file version (_engine_cache).
NO_ENGINE_CACHE = ":nocache"
ENGINE_CACHES_KEPT = 8  # model file versions whose weight cache is kept (each about the model's size)
DISPATCH_LIB_PREFIX = "libLiteRtDispatch_"
GPU_ACCELERATOR_LIB = "libLiteRtGpuAccelerator.so"


def _err(ctx, text: str) -> None:
    ctx.stderr((text.rstrip("\n") + "\n").encode())


def _rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _lib_dirs(ctx, inv) -> list[str]:
    dirs = []
    if inv.dispatch_lib_dir:
        dirs.append(str(inv.dispatch_lib_dir))
    dirs += [d for d in ctx.env.get("LD_LIBRARY_PATH", "").split(":") if d]
    return dirs


def _find_lib(ctx, dirs: list[str], predicate) -> str | None:
    for d in dirs:
        try:
            listdir = getattr(ctx, "listdir", None)
            if listdir is not None:
                names = sorted(listdir(d))
            else:
                host = ctx.resolve(d)
                names = sorted(p.name for p in host.iterdir()) if host.is_dir() else []
        except Exception:
            continue
        for name in names:
            if predicate(name):
                return name
    return None


@contextlib.contextmanager
def _pinned_model(ctx, device_path: str) -> Iterator[tuple[int, str, int]]:
    """(fd, path for the engine, size) of the model, race-free: the fd is opened by a directory-fd
    walk inside the sandbox, and the engine gets `<private dir>/model.litertlm`, a link to
    `/proc/self/fd/N` (LiteRT-LM wants the .litertlm name; the child inherits fd N), so a device
    client that swaps a path component for a symlink cannot point the engine outside the sandbox.
    The private dir (0700, off the device) is also where any engine cache would land."""
    open_file = getattr(ctx, "open_file", None)
    if open_file is not None:
        fd = open_file(device_path)
    else:  # a context without the fd API (tests building their own): open the checked path
        fd = os.open(ctx.resolve(device_path), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    tmp = tempfile.mkdtemp(prefix="g4m-runner-")
    try:
        st = os.fstat(fd)
        if not statmod.S_ISREG(st.st_mode):
            raise IsADirectoryError(device_path)
        link = os.path.join(tmp, "model.litertlm")
        os.symlink(f"/proc/self/fd/{fd}", link)
        yield fd, link, st.st_size
    finally:
        os.close(fd)
        shutil.rmtree(tmp, ignore_errors=True)


def _engine_cache(ctx, device_path: str, st: os.stat_result) -> str:
    """The cache_dir for LiteRT-LM: a directory of its own per model file version (path, inode,
    size, mtime, ctime), because LiteRT-LM names its cache only by file name, mtime and size; the
    least recently used beyond ENGINE_CACHES_KEPT are removed. NO_ENGINE_CACHE without a directory."""
    base = getattr(ctx, "engine_cache_dir", None)
    if base is None:
        return NO_ENGINE_CACHE
    import hashlib

    ident = f"{device_path}\0{st.st_dev}\0{st.st_ino}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}"
    d = Path(base) / hashlib.sha256(ident.encode()).hexdigest()[:24]
    try:
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.utime(d)  # most recently used
        # LiteRT-LM's name for a cache holds the model's mtime as it computes it, which can come out
        # one second apart between runs (a cache miss, then a second file): keep only the newest.
        files = sorted(d.glob("*.xnnpack_cache"), key=lambda p: p.stat().st_mtime, reverse=True)
        for stale in files[1:]:
            stale.unlink(missing_ok=True)
        kept = sorted((p for p in Path(base).iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in kept[ENGINE_CACHES_KEPT:]:
            shutil.rmtree(old, ignore_errors=True)
    except OSError:
        return NO_ENGINE_CACHE  # a cache only: run without it
    return str(d)


def run_runner(argv: list[str], ctx) -> int:
    prog = argv[0] if argv else RUNNER_NAME
    try:
        inv = parse_flags(argv[1:])
    except ValueError as e:
        _err(ctx, f"{prog}: ERROR: {e}")
        return EXIT_BAD_FLAGS
    with contextlib.ExitStack() as stack:
        try:
            fd, model, size = stack.enter_context(_pinned_model(ctx, str(inv.model_path)))
        except Exception:
            _err(ctx, f"{prog}: ERROR: NOT_FOUND: cannot open model file {inv.model_path}")
            return EXIT_RUNTIME_ERROR
        return _run_pinned(prog, inv, ctx, fd, model, size, _engine_cache(ctx, str(inv.model_path), os.fstat(fd)))


def _run_pinned(prog: str, inv, ctx, fd: int, model: str, size: int, cache_dir: str = NO_ENGINE_CACHE) -> int:
    if inv.backend == "npu":
        # The emulator has no NPU: like a phone without a usable dispatch library, NPU init fails.
        lib = _find_lib(ctx, _lib_dirs(ctx, inv), lambda n: n.startswith(DISPATCH_LIB_PREFIX) and n.endswith(".so"))
        if lib is None:
            _err(ctx, f"{prog}: ERROR: FAILED_PRECONDITION: Failed to load LiteRT dispatch library: "
                      f"no {DISPATCH_LIB_PREFIX}*.so in {inv.dispatch_lib_dir or '(no --litert_dispatch_lib_dir)'}")
        else:
            _err(ctx, f"{prog}: ERROR: UNAVAILABLE: {lib} loaded but no NPU device is available "
                      f"on this device ({ctx.profile.props.get('ro.soc.model', 'unknown SoC')})")
        return EXIT_RUNTIME_ERROR
    if inv.backend == "gpu":
        lib = _find_lib(ctx, _lib_dirs(ctx, inv), lambda n: n == GPU_ACCELERATOR_LIB)
        _err(ctx, f"{prog}: ERROR: UNAVAILABLE: GPU backend not available: "
                  + (f"{GPU_ACCELERATOR_LIB} not found on LD_LIBRARY_PATH" if lib is None
                     else "no OpenCL/GPU device in the reference emulator"))
        return EXIT_RUNTIME_ERROR

    budget = int(getattr(ctx.profile, "ram_budget_bytes", 0) or 0)
    if budget and size > budget:
        # Mapping the weights alone exceeds what the app may hold: the LMK kills it at load.
        _err(ctx, "Killed")
        return EXIT_LMK_KILLED

    job = {"model": model, "cache_dir": cache_dir, "backend": inv.backend, "input_prompt": inv.input_prompt,
           "benchmark": inv.benchmark, "prefill_tokens": inv.prefill_tokens, "decode_tokens": inv.decode_tokens,
           "report_peak_memory": inv.report_peak_memory, "threads": inv.num_threads,
           "max_num_tokens": inv.max_num_tokens, "seed": inv.seed,
           "apply_prompt_template": inv.apply_prompt_template, "max_output_tokens": inv.max_output_tokens}
    env = dict(os.environ)
    env["GEMMA4_MOBILE_RUNNER_JOB"] = json.dumps(job)
    proc = subprocess.Popen([sys.executable, "-m", "on_device.runner_worker"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env,
                            pass_fds=(fd,))

    def pump(stream, sink):
        for chunk in iter(lambda: stream.read1(65536) if hasattr(stream, "read1") else stream.read(65536), b""):
            sink(chunk)

    threads = [threading.Thread(target=pump, args=(proc.stdout, ctx.stdout), daemon=True),
               threading.Thread(target=pump, args=(proc.stderr, ctx.stderr), daemon=True)]
    for t in threads:
        t.start()
    killed = False
    cancelled = getattr(ctx, "cancelled", None)
    while proc.poll() is None:
        if budget and _rss_bytes(proc.pid) > budget:
            proc.kill()
            killed = True
            break
        if cancelled is not None and cancelled.is_set():
            proc.kill()
            break
        time.sleep(POLL_S)
    rc = proc.wait()
    for t in threads:
        t.join(timeout=5)
    if killed:
        _err(ctx, "Killed")
        return EXIT_LMK_KILLED
    if rc < 0:
        return 128 - rc
    return rc if rc in (0, EXIT_BAD_FLAGS) else (rc if rc < 128 else EXIT_RUNTIME_ERROR)
