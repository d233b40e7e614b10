"""The device-side runner contract, written down once.

The runner is LiteRT-LM's `litert_lm_main` on a phone, and the emulator's runner on the reference
emulator; both are invoked with the same command line and print the same lines. The host side
builds command lines with `build_argv` and reads results with `parse_output`, and nothing else.

Command line (flags as `litert_lm_main` takes them):
  RUNNER --backend=cpu|gpu|npu --model_path=PATH
         [--input_prompt=TEXT] [--max_num_tokens=N]
         [--benchmark --benchmark_prefill_tokens=N --benchmark_decode_tokens=N]
         [--report_peak_memory_footprint] [--litert_dispatch_lib_dir=DIR]
         [--num_cpu_threads=N] [--seed=N]
  Extensions (emulator runner and builds of litert_lm_main that have them; the agent loop needs
  them to send an already-rendered Gemma 4 prompt):
         [--apply_prompt_template=true|false] [--max_output_tokens=N]
  Sampling is greedy (top_k=1), so that device and reference outputs can be compared.

Output lines that the host reads (stdout):
  `Time to first token: S s`              ("BenchmarkInfo" block, with --benchmark)
  `Init Total: S s`                        (engine + session initialisation)
  `Prefill Speed: N tokens/sec`
  `Decode Speed: N tokens/sec`
  `Peak Memory Footprint: N MB`            (with --report_peak_memory_footprint)
  `Response: TEXT`                         (text generated for --input_prompt; may continue on
                                            further lines up to the line `End of response`)
Exit status: 0 ok; 1 runtime failure (message on stderr); 2 bad flags; 137 killed by the
low-memory killer (SIGKILL, as on a phone whose RAM budget the model exceeds).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath

RUNNER_NAME = "litert_lm_main"
# First line of the emulator's runner file: the emulator executes files that start with it.
EMULATOR_RUNNER_MAGIC = b"#!/system/bin/g4m-emulator-runner\n"
DEFAULT_DEVICE_DIR = PurePosixPath("/data/local/tmp/gemma4_mobile")
BACKENDS = ("cpu", "gpu", "npu")

EXIT_OK = 0
EXIT_RUNTIME_ERROR = 1
EXIT_BAD_FLAGS = 2
EXIT_LMK_KILLED = 137

RESPONSE_PREFIX = "Response: "
RESPONSE_END = "End of response"


def emulator_runner_bytes() -> bytes:
    """Content of the runner file that the emulator executes in place of `litert_lm_main`."""
    return EMULATOR_RUNNER_MAGIC + (
        b"# gemma4-mobile reference-emulator runner: executes the litert_lm_main contract\n"
        b"# on the host's LiteRT-LM CPU engine. See on_device/runner_contract.py.\n"
    )


@dataclass
class RunnerInvocation:
    model_path: PurePosixPath | str
    backend: str = "cpu"
    input_prompt: str | None = None
    benchmark: bool = False
    prefill_tokens: int | None = None
    decode_tokens: int | None = None
    report_peak_memory: bool = True
    dispatch_lib_dir: PurePosixPath | str | None = None
    num_threads: int | None = None
    max_num_tokens: int | None = None
    seed: int | None = None
    apply_prompt_template: bool = True
    max_output_tokens: int | None = None

    def flags(self) -> list[str]:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}")
        f = [f"--backend={self.backend}", f"--model_path={self.model_path}"]
        if self.input_prompt is not None:
            f.append(f"--input_prompt={self.input_prompt}")
        if self.max_num_tokens is not None:
            f.append(f"--max_num_tokens={self.max_num_tokens}")
        if self.benchmark:
            f.append("--benchmark")
            if self.prefill_tokens is not None:
                f.append(f"--benchmark_prefill_tokens={self.prefill_tokens}")
            if self.decode_tokens is not None:
                f.append(f"--benchmark_decode_tokens={self.decode_tokens}")
        if self.report_peak_memory:
            f.append("--report_peak_memory_footprint")
        if self.dispatch_lib_dir is not None:
            f.append(f"--litert_dispatch_lib_dir={self.dispatch_lib_dir}")
        if self.num_threads is not None:
            f.append(f"--num_cpu_threads={self.num_threads}")
        if self.seed is not None:
            f.append(f"--seed={self.seed}")
        if not self.apply_prompt_template:
            f.append("--apply_prompt_template=false")
        if self.max_output_tokens is not None:
            f.append(f"--max_output_tokens={self.max_output_tokens}")
        return f


def build_argv(runner_path: PurePosixPath | str, inv: RunnerInvocation) -> list[str]:
    return [str(runner_path), *inv.flags()]


def parse_flags(argv: list[str]) -> RunnerInvocation:
    """The runner side: argv (without the program name) -> invocation. ValueError on bad flags."""
    vals: dict[str, str | bool] = {}
    for a in argv:
        if not a.startswith("--"):
            raise ValueError(f"unexpected argument {a!r}")
        k, eq, v = a[2:].partition("=")
        vals[k] = v if eq else True
    known = {"backend", "model_path", "input_prompt", "max_num_tokens", "benchmark",
             "benchmark_prefill_tokens", "benchmark_decode_tokens", "report_peak_memory_footprint",
             "litert_dispatch_lib_dir", "num_cpu_threads", "seed", "apply_prompt_template",
             "max_output_tokens"}
    unknown = sorted(set(vals) - known)
    if unknown:
        raise ValueError(f"unknown flag --{unknown[0]}")
    if "model_path" not in vals or vals["model_path"] is True:
        raise ValueError("--model_path is required")

    def _int(k: str) -> int | None:
        if k not in vals:
            return None
        try:
            return int(str(vals[k]))
        except ValueError:
            raise ValueError(f"--{k} takes an integer") from None

    apt = str(vals.get("apply_prompt_template", "true")).lower()
    if apt not in ("true", "false", "1", "0"):
        raise ValueError("--apply_prompt_template takes true or false")
    backend = str(vals.get("backend", "cpu"))
    if backend not in BACKENDS:
        raise ValueError(f"--backend must be one of {', '.join(BACKENDS)}")
    return RunnerInvocation(
        model_path=str(vals["model_path"]),
        backend=backend,
        input_prompt=None if "input_prompt" not in vals else str(vals["input_prompt"]),
        benchmark=bool(vals.get("benchmark", False)),
        prefill_tokens=_int("benchmark_prefill_tokens"),
        decode_tokens=_int("benchmark_decode_tokens"),
        report_peak_memory=bool(vals.get("report_peak_memory_footprint", False)),
        dispatch_lib_dir=None if "litert_dispatch_lib_dir" not in vals else str(vals["litert_dispatch_lib_dir"]),
        num_threads=_int("num_cpu_threads"),
        max_num_tokens=_int("max_num_tokens"),
        seed=_int("seed"),
        apply_prompt_template=apt in ("true", "1"),
        max_output_tokens=_int("max_output_tokens"),
    )


@dataclass
class RunnerResult:
    init_s: float | None = None
    ttft_s: float | None = None
    prefill_tps: float | None = None
    decode_tps: float | None = None
    peak_mem_mb: float | None = None
    response: str | None = None
    extra: dict[str, float] = field(default_factory=dict)


def format_result(r: RunnerResult) -> str:
    """The runner side: the lines printed on stdout."""
    lines: list[str] = []
    if r.init_s is not None or r.ttft_s is not None:
        lines.append("BenchmarkInfo:")
    if r.init_s is not None:
        lines.append(f"  Init Total: {r.init_s:.6f} s")
    if r.ttft_s is not None:
        lines.append(f"  Time to first token: {r.ttft_s:.6f} s")
    if r.prefill_tps is not None:
        lines.append(f"  Prefill Speed: {r.prefill_tps:.2f} tokens/sec")
    if r.decode_tps is not None:
        lines.append(f"  Decode Speed: {r.decode_tps:.2f} tokens/sec")
    if r.peak_mem_mb is not None:
        lines.append(f"Peak Memory Footprint: {r.peak_mem_mb:.2f} MB")
    if r.response is not None:
        lines.append(RESPONSE_PREFIX + r.response)
        lines.append(RESPONSE_END)
    return "\n".join(lines) + "\n"


_NUM = r"([0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?)"
_PATTERNS = {
    "ttft_s": re.compile(r"Time to first token:\s*" + _NUM + r"\s*(ms|s)\b"),
    "init_s": re.compile(r"Init Total:\s*" + _NUM + r"\s*(ms|s)\b"),
    "prefill_tps": re.compile(r"Prefill Speed:\s*" + _NUM + r"\s*tokens/sec"),
    "decode_tps": re.compile(r"Decode Speed:\s*" + _NUM + r"\s*tokens/sec"),
    "peak_mem_mb": re.compile(r"Peak Memory Footprint:\s*" + _NUM + r"\s*MB"),
}


class RunnerOutputError(ValueError):
    """Runner output that does not hold what was asked for; carries its last lines."""

    def __init__(self, message: str, output: str):
        tail = " | ".join(line.strip() for line in output.strip().splitlines()[-5:] if line.strip())
        super().__init__(f"{message}; runner's last lines: {tail or '(no output)'}")
        self.output = output


def parse_output(text: str, *, expect_benchmark: bool = False, expect_response: bool = False) -> RunnerResult:
    """The host side: stdout -> figures. Raises RunnerOutputError when expected lines are missing."""
    r = RunnerResult()
    for key, pat in _PATTERNS.items():
        m = None
        for m in pat.finditer(text):  # the last occurrence wins (the last turn)
            pass
        if m is None:
            continue
        value = float(m.group(1))
        if key in ("ttft_s", "init_s") and m.group(2) == "ms":
            value /= 1000.0
        setattr(r, key, value)
    if RESPONSE_PREFIX in text:
        start = text.index(RESPONSE_PREFIX) + len(RESPONSE_PREFIX)
        end = text.find("\n" + RESPONSE_END, start)
        r.response = text[start:] if end < 0 else text[start:end]
    if expect_benchmark and (r.decode_tps is None or r.prefill_tps is None):
        raise RunnerOutputError("runner output has no 'Prefill Speed'/'Decode Speed' lines", text)
    if expect_response and r.response is None:
        raise RunnerOutputError("runner output has no 'Response:' line", text)
    return r
