"""Does a real-size E2B/E4B-shaped checkpoint convert on this machine? Peak RSS, time and int4 bundle size.

    python benchmarks/realsize_convert.py [--variant e2b] [--layers N] [--sweep-layers 2,4] [--scale S]
                                          [--recipe R] [--compare-v1] [--rss-limit-gib G] [--work DIR] [--keep]

Writes a text-only Gemma 4 checkpoint (Gemma4ForCausalLM, random bf16 weights of the published
shapes) straight to safetensors, tensor by tensor in row blocks, so generating it needs little
memory; then runs `gemma4-mobile convert` in a child process and samples the RSS of its process
tree. Converter V2 (`--use-v2 --delete-in-memory-params`, weights streamed from the checkpoint) is
used where the installed TensorFlow supports it, else the default converter (the script says why).
A memory guard kills a conversion whose tree's anonymous RSS (not the checkpoint's mapped pages, which the
kernel can drop) passes the limit (default: RAM minus 1.5 GiB) and
reports the peak it reached, rather than leaving the choice of victim to the kernel's OOM killer.

Each figure is printed next to a peer from the same run, as a ratio: peak RSS next to the
checkpoint size and this machine's RAM, the bundle size next to the planner's estimate and the
"under 1.5 GB" claim. `--sweep-layers 2,4` first converts shallower full-width models, fits peak
RSS and time against the parameter count, and prints the fit's prediction for the full model next
to what the full run then measures. `--layers N` keeps the first N layers (the KV-shared tail scaled
in proportion) at full width; `--scale S` multiplies the widths (hidden, MLP, vocab).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CLAIM_BYTES = 1.5e9  # the seed's "int4 E2B bundle under 1.5 GB"


def text_config(variant: str, layers: int | None, scale: float) -> dict:
    from converters.presets import get_preset

    tc = dict(get_preset(variant)["text_config"])
    n = tc["num_hidden_layers"]
    if layers and layers < n:
        # Keep whole sliding:full periods in the KV-shared tail: transformers requires the shared
        # layers to use the same layer types that the owning layers produce.
        period = tc["layer_types"].index("full_attention") + 1
        shared = round(tc["num_kv_shared_layers"] / n * layers / period) * period
        tc["num_kv_shared_layers"] = max(0, min(shared, layers - period))
        tc["layer_types"] = tc["layer_types"][:layers]
        if "full_attention" not in tc["layer_types"]:
            tc["layer_types"][-1] = "full_attention"
        tc["num_hidden_layers"] = layers
    if scale != 1.0:
        r8 = lambda x: max(8, int(x * scale) // 8 * 8)  # noqa: E731
        tc["hidden_size"] = r8(tc["hidden_size"])
        tc["intermediate_size"] = r8(tc["intermediate_size"])
        tc["vocab_size"] = tc["vocab_size_per_layer_input"] = r8(tc["vocab_size"])
    return tc


def write_checkpoint(tc: dict, out: Path) -> int:
    """config.json, tokenizer and one streamed bf16 model.safetensors; returns the weight bytes."""
    import torch
    from transformers import Gemma4ForCausalLM, Gemma4TextConfig

    cfg = Gemma4TextConfig(**{k: v for k, v in tc.items() if k != "model_type"}, pad_token_id=0, bos_token_id=2,
                           eos_token_id=[1, 106])
    cfg.architectures = ["Gemma4ForCausalLM"]
    with torch.device("meta"):
        model = Gemma4ForCausalLM(cfg)
    tensors = [(k, tuple(v.shape)) for k, v in model.state_dict().items() if k != "lm_head.weight"]
    header, off = {}, 0
    for name, shape in tensors:
        n = 1
        for s in shape:
            n *= s
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [off, off + 2 * n]}
        off += 2 * n
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    out.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(0)
    with open(out / "model.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        for name, shape in tensors:
            if len(shape) <= 1:  # norms and layer scalars: ones, as a trained model roughly has
                f.write(torch.ones(shape, dtype=torch.bfloat16).view(torch.int16).numpy().tobytes())
                continue
            rows, cols = shape[0], int(torch.tensor(shape[1:]).prod())
            step = max(1, (64 << 20) // (cols * 4))  # ~64 MiB of float32 per block
            for r in range(0, rows, step):
                block = torch.randn(min(step, rows - r), cols, generator=gen).mul_(0.02).to(torch.bfloat16)
                f.write(block.view(torch.int16).numpy().tobytes())
    cfg.save_pretrained(out)
    # transformers 5.24 picks a grouped-mm experts implementation by default, which litert-torch's
    # patched Gemma 4 model refuses; Converter V2 in turn refuses litert-torch's
    # moe_exports_implementation override, so the checkpoint names the (no-op, dense) eager one.
    c = json.loads((out / "config.json").read_text())
    c["experts_implementation"] = "eager"
    (out / "config.json").write_text(json.dumps(c, indent=2))
    # The tiny models' byte-level BPE tokenizer (with the Gemma 4 specials): conversion only packages it.
    from sdk_tools.tinymodels import build, corpus

    build.make_tokenizer(corpus.training_texts(0), 512).save_pretrained(out)
    return off


def reuse_checkpoint(tc: dict, out: Path) -> int | None:
    """The weight bytes of a checkpoint written earlier (--keep) for the same config, else None."""
    try:
        cfg = json.loads((out / "config.json").read_text())
        with open(out / "model.safetensors", "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            header = json.loads(f.read(n))
    except (OSError, ValueError):
        return None
    keys = ("hidden_size", "num_hidden_layers", "intermediate_size", "vocab_size", "num_kv_shared_layers")
    if any(cfg.get(k) != tc.get(k) for k in keys):
        return None
    return max(v["data_offsets"][1] for k, v in header.items() if k != "__metadata__")


def tree_rss(pid: int) -> tuple[int, int]:
    """(anonymous + shared-memory RSS, total RSS) in bytes of a process and all its descendants.

    The first is what the kernel cannot take back; the second also counts the checkpoint's
    memory-mapped pages, which it can drop under pressure, so the guard and the fit use the first."""
    anon = total = 0
    stack = [pid]
    while stack:
        p = stack.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                key, _, rest = line.partition(":")
                if key in ("RssAnon", "RssShmem"):
                    anon += int(rest.split()[0]) * 1024
                elif key == "VmRSS":
                    total += int(rest.split()[0]) * 1024
            kids = Path(f"/proc/{p}/task/{p}/children").read_text().split()
            stack.extend(int(k) for k in kids)
        except (OSError, ValueError):
            pass
    return anon, total


def run_convert(ckpt: Path, out: Path, recipe: str, v2: bool, cache: int, rss_limit: int,
                converter: str = "default") -> dict:
    """Convert in a new session, sampling the tree's RSS; past `rss_limit` the whole tree is killed
    (instead of letting the kernel's OOM killer pick a process) and the run is reported as stopped."""
    exe = Path(sys.executable).with_name("gemma4-mobile")
    cmd = [str(exe), "convert", str(ckpt), "-o", str(out), "-r", recipe, "--cache-length", str(cache),
           "--force", "--json"] + (["--use-v2", "--delete-in-memory-params"] if v2 else
                                   ["--ignore-memory-check", "--converter", converter])
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    peak, peak_total, at_peak, timeline, stopped = [0], [0], [0.0], [], [False]

    def sample():
        while proc.poll() is None:
            rss, total = tree_rss(proc.pid)
            now = time.perf_counter() - t0
            timeline.append((round(now, 1), rss))
            peak_total[0] = max(peak_total[0], total)
            if rss > peak[0]:
                peak[0], at_peak[0] = rss, now
            if rss > rss_limit and not stopped[0]:
                stopped[0] = True
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.5)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    stdout, stderr = proc.communicate()
    th.join()
    wall = time.perf_counter() - t0
    step = max(1, len(timeline) // 40)
    res = {"v2": v2, "converter": "v2" if v2 else converter, "rc": proc.returncode, "wall_s": wall,
           "peak_rss_bytes": peak[0], "peak_rss_with_mapped_bytes": peak_total[0], "peak_at_s": at_peak[0],
           "stopped_at_limit": stopped[0], "rss_limit_bytes": rss_limit, "rss_timeline": timeline[::step],
           "error": None}
    if stopped[0]:
        res["error"] = f"stopped by the memory guard at {peak[0] / 2**30:.2f} GiB (limit {rss_limit / 2**30:.2f} GiB)"
    elif proc.returncode:
        lines = stderr.strip().splitlines()
        res["error"] = lines[-1] if lines else f"exit status {proc.returncode}"
    if proc.returncode == 0:
        d = json.loads(stdout)
        res["bundle_bytes"] = d["bundles"][0]["model_bytes"]
        res["timings_s"] = d["timings_s"]
        res["bundle_dir"] = d["bundles"][0]["bundle"]
        manifest = json.loads((Path(res["bundle_dir"]) / "manifest.json").read_text())
        res["lean_stages"] = manifest["export"].get("lean_stages")
    return res


def converter_v2_supported() -> bool:
    from converters.pipeline import check_converter_v2
    from gemma4_common.errors import UserError

    try:
        check_converter_v2()
        return True
    except UserError as e:
        print(f"converter v2 (streaming): not run: {e}")
        return False


def measure(args, layers: int | None, v2_ok: bool) -> dict:
    """Write one checkpoint (full width unless --scale) and convert it with each available converter."""
    from converters.planner import ModelShape, estimate_bundle
    from converters.recipes import get_recipe

    tc = text_config(args.variant, layers, args.scale)
    shape = ModelShape.from_config(tc, name=args.variant)
    est = estimate_bundle(shape, get_recipe(args.recipe), prefill_lengths=[128], cache_lengths=[args.cache_length])
    work = args.work / f"{tc['num_hidden_layers']}L"
    # float32 TFLite intermediates + the checkpoint + the bundle must fit on disk
    need = int(est.total * 32 / get_recipe(args.recipe).weight_bits * 1.3)
    args.work.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(args.work).free
    if free < need:
        raise SystemExit(f"not enough disk under {args.work}: need ~{need / 1e9:.1f} GB, {free / 1e9:.1f} GB free")
    label = f"{args.variant} {tc['num_hidden_layers']} layers, hidden {tc['hidden_size']}, vocab {tc['vocab_size']}"
    t0 = time.perf_counter()
    ckpt_bytes = reuse_checkpoint(tc, work / "ckpt") if args.keep else None
    if ckpt_bytes is None:
        ckpt_bytes = write_checkpoint(tc, work / "ckpt")
    print(f"checkpoint: {label}: {ckpt_bytes / 2 / 1e9:.2f} B params, {ckpt_bytes / 1e9:.2f} GB bf16, "
          f"{'reused' if time.perf_counter() - t0 < 1 else 'written'} in {time.perf_counter() - t0:.0f} s")
    runs = []
    if v2_ok:
        runs.append(run_convert(work / "ckpt", work / "bundle-v2", args.recipe, True, args.cache_length,
                                args.rss_limit))
    for conv in converters_for(args, layers):
        runs.append(run_convert(work / "ckpt", work / f"bundle-{conv}", args.recipe, False, args.cache_length,
                                args.rss_limit, converter=conv))
    lean_shape = dataclasses.replace(shape, separate_embedders=True)
    for r in runs:
        name = {"v2": "converter v2 (streaming)", "default": "default path (litert-torch export_hf)",
                "lean": "lean path (sections)"}[r["converter"]]
        est_r = estimate_bundle(lean_shape if r["converter"] == "lean" else shape, get_recipe(args.recipe),
                                prefill_lengths=[128], cache_lengths=[args.cache_length])
        r["estimate_bytes"] = est_r.total
        if r["rc"] != 0:
            print(f"  {name}: FAILED after {r['wall_s']:.0f} s, peak RSS {r['peak_rss_bytes'] / 2**30:.2f} GiB "
                  f"anonymous (at {r['peak_at_s']:.0f} s) = {r['peak_rss_bytes'] / ckpt_bytes:.2f}x the bf16 "
                  f"checkpoint: {r['error']}")
            continue
        print(f"  {name}: {r['wall_s']:.0f} s, peak RSS {r['peak_rss_bytes'] / 2**30:.2f} GiB anonymous "
              f"({r['peak_rss_with_mapped_bytes'] / 2**30:.2f} GiB with mapped files) = "
              f"{r['peak_rss_bytes'] / ckpt_bytes:.2f}x the bf16 checkpoint ({ckpt_bytes / 2**30:.2f} GiB)")
        print(f"    bundle ({args.recipe}): {r['bundle_bytes'] / 1e9:.3f} GB = "
              f"{r['bundle_bytes'] / est_r.total:.3f}x the planner's estimate ({est_r.total / 1e9:.3f} GB)")
        print("    steps: " + ", ".join(f"{k} {v:.0f} s" for k, v in r["timings_s"].items()))
        if r.get("lean_stages"):
            from converters.planner import lean_stage_bytes

            pred = lean_stage_bytes(shape)
            print("    lean stages (peak anonymous RSS of the stage process / planner): " + ", ".join(
                f"{k} {v['peak_rss_bytes'] / 2**30:.2f} GiB {v['seconds']:.0f} s"
                + (f" ({v['peak_rss_bytes'] / pred[_stage_key(k)]:.2f}x)" if _stage_key(k) in pred else "")
                for k, v in r["lean_stages"].items()))
            conv_pred = max(pred.values())
            print(f"    planner's lean peak {conv_pred / 2**30:.2f} GiB; measured tree / planner "
                  f"{r['peak_rss_bytes'] / conv_pred:.2f}x")
    ok = {r["converter"]: r for r in runs if r["rc"] == 0}
    if "lean" in ok and "default" in ok:
        a, b = ok["lean"], ok["default"]
        print(f"  lean / default: peak RSS {a['peak_rss_bytes'] / b['peak_rss_bytes']:.2f}x, "
              f"time {a['wall_s'] / b['wall_s']:.2f}x, bundle {a['bundle_bytes'] / b['bundle_bytes']:.3f}x")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return {"config": label, "layers": tc["num_hidden_layers"], "params": ckpt_bytes // 2,
            "checkpoint_bytes": ckpt_bytes, "estimate_bytes": est.total, "runs": runs}


def converters_for(args, layers: int | None) -> list[str]:
    """--converter both: the default path only where it can fit (the sweep's shallow models), else lean."""
    if args.converter != "both":
        return [args.converter]
    return ["default", "lean"] if layers is not None else ["lean"]


def _stage_key(label: str) -> str:
    """'quantize decoder dynamic_wi4b32_afp32' -> the planner's 'quantize decoder'."""
    for k in ("export decoder", "quantize decoder", "per_layer_embedder", "embedder"):
        if label.startswith(k):
            return k
    return label


def extrapolate(points: list[dict], full_params: int, machine: int) -> dict | None:
    """Least-squares line through (params, peak RSS) and (params, time) of the completed default-converter
    runs, read at the full model's parameter count."""
    xs, rss, secs = [], [], []
    for p in points:
        for r in p["runs"]:
            if r["rc"] == 0 and r["converter"] == "default":
                xs.append(p["params"])
                rss.append(r["peak_rss_bytes"])
                secs.append(r["wall_s"])
    if len(set(xs)) < 2:
        return None

    def fit(ys):
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
        return my - slope * mx, slope

    (ra, rb), (ta, tb) = fit(rss), fit(secs)
    peak, wall = ra + rb * full_params, ta + tb * full_params
    print(f"default converter, fitted over {len(xs)} runs: peak RSS = {ra / 2**30:.2f} GiB + "
          f"{rb * 1e9 / 2**30:.2f} GiB per B params ({rb:.2f} bytes/param); time = {ta:.0f} s + {tb * 1e9:.0f} s per B")
    print(f"  at the full model ({full_params / 1e9:.2f} B params): peak RSS ~{peak / 2**30:.1f} GiB = "
          f"{peak / machine:.2f}x this machine's {machine / 2**30:.1f} GiB, time ~{wall / 60:.0f} min")
    return {"rss_intercept_bytes": ra, "rss_bytes_per_param": rb, "time_intercept_s": ta, "time_s_per_param": tb,
            "full_params": full_params, "predicted_peak_rss_bytes": peak, "predicted_wall_s": wall}


_ENGINE_BENCH = """
import json, sys
sys.path.insert(0, sys.argv[4])
from on_device.engine import benchmark, peak_rss_mb
st = benchmark(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
print(json.dumps({"init_s": st.init_s, "ttft_s": st.ttft_s, "prefill_tps": st.prefill_tps, "decode_tps": st.decode_tps,
                  "prefill_tokens": st.prefill_tokens, "decode_tokens": st.decode_tokens, "peak_rss_mb": peak_rss_mb()}))
"""  # noqa: E501 (script text run in a child process; wrapping would change the string)

_EAGER_DECODE = """
import json, sys, time, torch
from transformers import AutoTokenizer, Gemma4ForCausalLM
torch.set_num_threads(int(sys.argv[3]))
tok = AutoTokenizer.from_pretrained(sys.argv[1])
m = Gemma4ForCausalLM.from_pretrained(sys.argv[1], dtype=getattr(torch, sys.argv[2])).eval()
ids = torch.tensor([[tok.bos_token_id] + tok("Write a short story about a robot", add_special_tokens=False).input_ids])
n = int(sys.argv[4])
with torch.no_grad():
    out = m(input_ids=ids, use_cache=True)
    past, nxt = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
    t0 = time.perf_counter()
    for _ in range(n):
        out = m(input_ids=nxt, past_key_values=past, use_cache=True)
        past, nxt = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
    dt = time.perf_counter() - t0
import resource
print(json.dumps({"decode_tps": n / dt, "dtype": sys.argv[2], "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""  # noqa: E501 (script text run in a child process; wrapping would change the string)


def copy_bandwidth(gib: float = 1.0, repeats: int = 5) -> float:
    """Bytes moved per second (read + write) by a large numpy copy: this machine's memory bandwidth."""
    import numpy as np

    a = np.ones(int(gib * 2**30) // 8)
    b = np.empty_like(a)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(b, a)
        best = min(best, time.perf_counter() - t0)
    return 2 * a.nbytes / best


def run_figures(bundle_dir: Path, ckpt: Path, variant: str, context: int, threads: int = 2) -> dict:
    """`gemma4-mobile run` generates; LiteRT-LM's benchmark (TTFT, prefill/decode tok/s, peak RSS); the decode
    rate next to the memory-bandwidth limit and next to eager transformers greedy decoding."""
    from converters.planner import plan

    exe = Path(sys.executable).with_name("gemma4-mobile")
    out: dict = {}
    t0 = time.perf_counter()
    r = subprocess.run([str(exe), "run", str(bundle_dir), "-p", "The capital of France is", "--max-tokens", "16",
                        "--json"], capture_output=True, text=True, timeout=1800)
    out["run"] = {"rc": r.returncode, "s": time.perf_counter() - t0,
                  "out": r.stdout.strip()[-400:], "err": r.stderr.strip().splitlines()[-1:] if r.returncode else []}
    print(f"gemma4-mobile run: rc {r.returncode} in {out['run']['s']:.0f} s: {out['run']['out'][:200]!r}")
    r = subprocess.run([sys.executable, "-c", _ENGINE_BENCH, str(bundle_dir / "model.litertlm"), "128", "32",
                        str(Path(__file__).resolve().parents[1])], capture_output=True, text=True, timeout=1800)
    eng = json.loads(r.stdout.strip().splitlines()[-1]) if r.returncode == 0 else {"error": r.stderr[-300:]}
    out["engine"] = eng
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    p = plan(str(ckpt), manifest["recipe"]["name"], context, converter=manifest["export"].get("converter"))
    per_token = p.memory["resident_weights"] + p.memory["kv_cache"]
    bw = copy_bandwidth()
    limit = bw / per_token
    out.update({"copy_bandwidth_bytes_s": bw, "bytes_per_token": per_token, "bandwidth_limit_tps": limit})
    if "decode_tps" in eng:
        print(f"LiteRT-LM CPU ({threads} cores): TTFT {eng['ttft_s']:.2f} s, prefill {eng['prefill_tps']:.1f} tok/s, "
              f"decode {eng['decode_tps']:.2f} tok/s, peak RSS {eng['peak_rss_mb'] / 1024:.2f} GiB, "
              f"init {eng['init_s']:.1f} s")
        print(f"  decode vs memory-bandwidth limit: {eng['decode_tps']:.2f} / {limit:.2f} tok/s = "
              f"{eng['decode_tps'] / limit:.2f}x (numpy copy {bw / 1e9:.1f} GB/s over "
              f"{per_token / 1e9:.2f} GB per token: "
              f"resident weights + KV at {context} from the planner)")
    else:
        print(f"LiteRT-LM benchmark failed: {eng.get('error')}")
    dtype = "bfloat16"  # float32 would need 4 bytes/param (18.5 GB for E2B): more than the RAM cap here
    r = subprocess.run([sys.executable, "-c", _EAGER_DECODE, str(ckpt), dtype, str(threads), "8"],
                       capture_output=True, text=True, timeout=3600)
    eager = json.loads(r.stdout.strip().splitlines()[-1]) if r.returncode == 0 else {"error": r.stderr[-300:]}
    out["eager"] = eager
    if "decode_tps" in eager and "decode_tps" in eng:
        print(f"  decode vs eager transformers greedy ({dtype}, same checkpoint, {threads} threads): "
              f"{eng['decode_tps']:.2f} / {eager['decode_tps']:.3f} tok/s = "
              f"{eng['decode_tps'] / eager['decode_tps']:.1f}x (goal >= 3x)")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", default="e2b", choices=["e2b", "e4b"])
    ap.add_argument("--layers", type=int, default=None, help="keep the first N layers (default: all)")
    ap.add_argument("--sweep-layers", default=None,
                    help="comma-separated depths (e.g. 2,4) converted at full width first; peak RSS and time are "
                         "fitted against the parameter count and read at the full model")
    ap.add_argument("--scale", type=float, default=1.0, help="width multiplier (default 1 = real size)")
    ap.add_argument("--recipe", default="dynamic_wi4b32_afp32")
    ap.add_argument("--cache-length", type=int, default=4096)
    ap.add_argument("--converter", default="both", choices=["default", "lean", "both"],
                    help="both (default): default and lean on the sweep's models, lean at the requested depth")
    ap.add_argument("--rss-limit-gib", type=float, default=None,
                    help="kill a conversion whose process tree passes this RSS (default: RAM minus 1.5 GiB)")
    ap.add_argument("--work", type=Path, default=None, help="work directory (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the checkpoints and bundles (and reuse them)")
    ap.add_argument("--run", action="store_true", help="after the last conversion, measure the bundle running")
    ap.add_argument("--run-only", type=Path, default=None, metavar="BUNDLE",
                    help="only the run figures of an existing bundle (with --checkpoint)")
    ap.add_argument("--checkpoint", type=Path, default=None)
    args = ap.parse_args()
    if args.run_only:
        print(json.dumps(run_figures(args.run_only, args.checkpoint, args.variant, args.cache_length), default=str))
        return 0

    from converters.planner import ModelShape, count_params, estimate_bundle, host_ram_bytes
    from converters.recipes import get_recipe

    machine = host_ram_bytes()
    args.rss_limit = int(args.rss_limit_gib * 2**30) if args.rss_limit_gib else machine - int(1.5 * 2**30)
    own_work = args.work is None
    args.work = args.work or Path(tempfile.mkdtemp(prefix="g4m-realsize-"))
    v2_ok = converter_v2_supported()
    try:
        sweep = [int(x) for x in args.sweep_layers.split(",")] if args.sweep_layers else []
        points = [measure(args, n, v2_ok) for n in sweep]
        # the checkpoint's parameters (tied head stored once), as write_checkpoint will write them
        full_params = count_params(ModelShape.from_config(text_config(args.variant, args.layers, args.scale),
                                                          name=args.variant)).checkpoint_text
        fitted = extrapolate(points, full_params, machine) if points else None
        points.append(measure(args, args.layers, v2_ok))
        last = points[-1]
        for r in last["runs"]:
            if fitted and r["converter"] == "default":
                print(f"default path, measured / fitted peak RSS: "
                      f"{r['peak_rss_bytes'] / fitted['predicted_peak_rss_bytes']:.2f}x"
                      + (" (a lower bound: the run was stopped)" if r["stopped_at_limit"] else ""))
            if r["converter"] == "lean" and r["rc"] == 0:
                from converters.planner import conversion_memory_bytes

                peer = fitted["predicted_peak_rss_bytes"] if fitted else conversion_memory_bytes(full_params)
                src = "this run's fit" if fitted else "the planner's fit"
                print(f"lean path at {last['config']}: peak RSS {r['peak_rss_bytes'] / 2**30:.2f} GiB vs the default "
                      f"path's {peer / 2**30:.1f} GiB ({src}) = {r['peak_rss_bytes'] / peer:.2f}x; "
                      f"wall {r['wall_s'] / 60:.1f} min")
        if args.layers is None and args.scale == 1.0:
            for r in last["runs"]:
                if r["rc"] == 0:
                    print(f"full-size {args.variant} bundle: {r['bundle_bytes'] / 1e9:.2f} GB = "
                          f"{r['bundle_bytes'] / CLAIM_BYTES:.2f}x the 1.5 GB claim")
        else:
            full = ModelShape.from_config(text_config(args.variant, None, 1.0), name=args.variant)
            fe = estimate_bundle(full, get_recipe(args.recipe), prefill_lengths=[128],
                                 cache_lengths=[args.cache_length]).total
            print(f"full-size {args.variant} estimate: {fe / 1e9:.2f} GB = {fe / CLAIM_BYTES:.2f}x the 1.5 GB claim")
        runs = {}
        if args.run:
            ok = [r for r in last["runs"] if r["rc"] == 0 and r["converter"] == "lean"]
            if ok:
                runs = run_figures(Path(ok[0]["bundle_dir"]), args.work / f"{last['layers']}L" / "ckpt", args.variant,
                                   args.cache_length)
        print(json.dumps({"machine_ram_bytes": machine, "converter_v2": v2_ok, "points": points, "fit": fitted,
                          "run": runs}, default=str))
        return 0 if all(r["rc"] == 0 for p in points for r in p["runs"]) else 1
    finally:
        if not args.keep and own_work:
            shutil.rmtree(args.work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
