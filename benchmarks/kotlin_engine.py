"""The Kotlin SDK's JVM backend (LiteRT-LM's C API through JNA) next to the Python host engine
(`on_device.engine.HostEngine`, LiteRT-LM's Python binding of the same library): decode tok/s and
engine init time, same bundle, same prompt, same greedy settings, same run. Goal: the binding adds
no per-token cost (Kotlin/Python >= 0.95).

    python benchmarks/kotlin_engine.py [--bundle DIR] [--max-tokens 256] [--runs 10] [--warmup 3] [--rounds 8]

Needs the classes `android_sample/ci_check.sh` compiles (android_sample/build/ci). Without --bundle
it uses the tiny e2b int8 bundle the tests build. Each side runs in a fresh process; the sides
alternate for --rounds so that load on the machine hits both alike. Decode tok/s is decode tokens
over the caller's wall time of one whole generate() call (session, prefill, streamed decode through
the binding's callback), the median over runs; the engine's own decode figure is printed too.
Init is the engine's load time (the Kotlin side includes the SDK's .litertlm container check),
for the first and the second engine opened in the process.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "android_sample" / "build" / "ci"
KOTLIN_LIB = ROOT / "android_sample" / ".tools" / "node_modules" / "kotlin-compiler" / "lib"
JNA_JAR = Path("/usr/share/java/jna.jar")
# A raw prompt (no chat template) the tiny model continues for a hundred-odd tokens before its end token.
PROMPT = "The capital of France is Paris. The capital of"
TEST_RECIPES = ["fp32", "dynamic_wi8_afp32", "dynamic_wi4c_afp32"]


def python_side(model: str, max_tokens: int, warmup: int, runs: int, prompt: str) -> dict:
    from on_device.engine import HostEngine

    rows = []
    # Opened twice, as the Kotlin side does: the first open in a process pays one-time costs.
    with HostEngine(model, max_num_tokens=1024) as first:
        cold = first.init_s
    with HostEngine(model, max_num_tokens=1024) as eng:
        for i in range(warmup + runs):
            t0 = time.perf_counter()
            g = eng.generate(prompt, max_tokens)
            wall = time.perf_counter() - t0
            if i >= warmup:
                rows.append({"decode_tokens": g.stats.decode_tokens, "engine_decode_tps": g.stats.decode_tps,
                             "chars": len(g.text), "generate_s": wall})
        return {"init_cold_s": cold, "init_s": eng.init_s, "runs": rows}


def kotlin_cmd(model: str, library: str, max_tokens: int, warmup: int, runs: int, prompt: str) -> list[str]:
    cp = [BUILD / "main", BUILD / "sdk-core", BUILD / "sdk", KOTLIN_LIB / "kotlin-stdlib.jar",
          KOTLIN_LIB / "kotlinx-coroutines-core-jvm.jar", JNA_JAR]
    missing = [str(p) for p in cp if not p.exists()]
    if missing:
        raise SystemExit(f"error: {', '.join(missing)} missing; run `bash android_sample/ci_check.sh` first")
    return ["java", "-Xmx512m", "-Djna.boot.library.path=/usr/lib/x86_64-linux-gnu/jni:/usr/lib/jni",
            "-cp", ":".join(map(str, cp)), "com.gemma4mobile.sdk.jvm.DecodeBench",
            model, library, str(max_tokens), str(warmup), str(runs), prompt]


def run_json(cmd: list[str]) -> dict:
    r = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=900, cwd=ROOT)
    if r.returncode != 0:
        raise SystemExit(f"error: {' '.join(cmd[:3])}... failed: {r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def summary(results: list[dict]) -> dict:
    runs = [row for res in results for row in res["runs"]]
    return {"tps": statistics.median(r["decode_tokens"] / r["generate_s"] for r in runs),
            "engine_tps": statistics.median(r["engine_decode_tps"] for r in runs),
            "tokens": statistics.median(r["decode_tokens"] for r in runs),
            "chars": sorted({r["chars"] for r in runs}),
            "init_s": statistics.median(res["init_s"] for res in results),
            "init_cold_s": statistics.median(res["init_cold_s"] for res in results), "n": len(runs)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--prompt", default=PROMPT)
    ap.add_argument("--python-side", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()

    if a.bundle is None:
        from sdk_tools.tinymodels.build import build_tiny, cached_bundles

        a.bundle = cached_bundles(build_tiny("e2b-tiny"), TEST_RECIPES)["dynamic_wi8_afp32"]
    model = str(Path(a.bundle) / "model.litertlm")
    if a.python_side:
        print(json.dumps(python_side(model, a.max_tokens, a.warmup, a.runs, a.prompt)))
        return 0

    import litert_lm

    library = str(Path(litert_lm.__file__).parent / "liblitert-lm.so")
    py_cmd = [sys.executable, str(Path(__file__).resolve()), "--python-side", "--bundle", str(a.bundle),
              "--max-tokens", str(a.max_tokens), "--runs", str(a.runs), "--warmup", str(a.warmup), "--prompt", a.prompt]
    kt_cmd = kotlin_cmd(model, library, a.max_tokens, a.warmup, a.runs, a.prompt)
    py, kt = [], []
    for _ in range(a.rounds):
        py.append(run_json(py_cmd))
        kt.append(run_json(kt_cmd))
    p, k = summary(py), summary(kt)
    # Each round's two sides ran back to back: their ratio is the least affected by load drift.
    pairs = sorted(summary([kr])["tps"] / summary([pr])["tps"] for pr, kr in zip(py, kt))
    print(f"bundle: {a.bundle}  prompt: {a.prompt!r}  max tokens {a.max_tokens}, {k['n']} runs per side "
          f"({a.rounds} alternating rounds of {a.runs} after {a.warmup} warm-up)")
    print(f"decode tokens per run: kotlin {k['tokens']:.0f}  python {p['tokens']:.0f}  "
          f"(answer chars kotlin {k['chars']} python {p['chars']})")
    print(f"decode tok/s (generate() wall): kotlin/JNA {k['tps']:.0f}  python {p['tps']:.0f}  "
          f"ratio {k['tps'] / p['tps']:.3f} (goal >= 0.95)")
    print(f"  per round (kotlin/python, back to back): median {statistics.median(pairs):.3f}, "
          f"range {pairs[0]:.3f}-{pairs[-1]:.3f} over {len(pairs)} rounds")
    print(f"decode tok/s (engine's own):    kotlin/JNA {k['engine_tps']:.0f}  python {p['engine_tps']:.0f}  "
          f"ratio {k['engine_tps'] / p['engine_tps']:.3f}")
    print(f"binding efficiency (wall tok/s / engine's own): kotlin/JNA {k['tps'] / k['engine_tps']:.3f}  "
          f"python {p['tps'] / p['engine_tps']:.3f}")
    kr = [row for res in kt for row in res["runs"]]
    per_token_us = statistics.median(
        (r["decode_wall_s"] - r["decode_tokens"] / r["engine_decode_tps"]) / r["decode_tokens"] for r in kr) * 1e6
    print(f"kotlin/JNA streaming cost: decode wall (start of decoding to last chunk, seen by the caller) minus "
          f"the engine's own decode time = {per_token_us:.2f} us per token (median)")
    print(f"engine init s (2nd open):       kotlin/JNA {k['init_s']:.4f}  python {p['init_s']:.4f}  "
          f"ratio {k['init_s'] / p['init_s']:.3f} (lower is faster)")
    print(f"engine init s (1st in process): kotlin/JNA {k['init_cold_s']:.4f}  python {p['init_cold_s']:.4f}  "
          f"ratio {k['init_cold_s'] / p['init_cold_s']:.3f} (JVM class loading and JNA's first calls count here)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
