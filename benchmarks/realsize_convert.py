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


def run_convert(ckpt: Path, out: Path, recipe: str, v2: bool, cache: int, rss_limit: int) -> dict:
    """Convert in a new session, sampling the tree's RSS; past `rss_limit` the whole tree is killed
    (instead of letting the kernel's OOM killer pick a process) and the run is reported as stopped."""
    exe = Path(sys.executable).with_name("gemma4-mobile")
    cmd = [str(exe), "convert", str(ckpt), "-o", str(out), "-r", recipe, "--cache-length", str(cache),
           "--force", "--json"] + (["--use-v2", "--delete-in-memory-params"] if v2 else ["--ignore-memory-check"])
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
    res = {"v2": v2, "rc": proc.returncode, "wall_s": wall, "peak_rss_bytes": peak[0],
           "peak_rss_with_mapped_bytes": peak_total[0], "peak_at_s": at_peak[0],
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
    ckpt_bytes = write_checkpoint(tc, work / "ckpt")
    print(f"checkpoint: {label}: {ckpt_bytes / 2 / 1e9:.2f} B params, {ckpt_bytes / 1e9:.2f} GB bf16, "
          f"written in {time.perf_counter() - t0:.0f} s")
    runs = []
    if v2_ok:
        runs.append(run_convert(work / "ckpt", work / "bundle-v2", args.recipe, True, args.cache_length, args.rss_limit))
    if args.compare_v1 or not v2_ok:
        runs.append(run_convert(work / "ckpt", work / "bundle-v1", args.recipe, False, args.cache_length,
                                args.rss_limit))
    for r in runs:
        name = "converter v2 (streaming)" if r["v2"] else "converter v1 (default)"
        if r["rc"] != 0:
            print(f"  {name}: FAILED after {r['wall_s']:.0f} s, peak RSS {r['peak_rss_bytes'] / 2**30:.2f} GiB anonymous "
                  f"(at {r['peak_at_s']:.0f} s) = {r['peak_rss_bytes'] / ckpt_bytes:.2f}x the bf16 checkpoint: "
                  f"{r['error']}")
            continue
        print(f"  {name}: {r['wall_s']:.0f} s, peak RSS {r['peak_rss_bytes'] / 2**30:.2f} GiB anonymous "
              f"({r['peak_rss_with_mapped_bytes'] / 2**30:.2f} GiB with mapped files) = "
              f"{r['peak_rss_bytes'] / ckpt_bytes:.2f}x the bf16 checkpoint ({ckpt_bytes / 2**30:.2f} GiB)")
        print(f"    bundle ({args.recipe}): {r['bundle_bytes'] / 1e9:.3f} GB = "
              f"{r['bundle_bytes'] / est.total:.3f}x the planner's estimate ({est.total / 1e9:.3f} GB)")
        print("    steps: " + ", ".join(f"{k} {v:.0f} s" for k, v in r["timings_s"].items()))
    if len(runs) == 2 and all(r["rc"] == 0 for r in runs):
        a, b = runs
        print(f"  v2 / v1: peak RSS {a['peak_rss_bytes'] / b['peak_rss_bytes']:.2f}x, "
              f"time {a['wall_s'] / b['wall_s']:.2f}x, bundle {a['bundle_bytes'] / b['bundle_bytes']:.3f}x")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return {"config": label, "layers": tc["num_hidden_layers"], "params": ckpt_bytes // 2,
            "checkpoint_bytes": ckpt_bytes, "estimate_bytes": est.total, "runs": runs}


def extrapolate(points: list[dict], full_params: int, machine: int) -> dict | None:
    """Least-squares line through (params, peak RSS) and (params, time) of the completed default-converter
    runs, read at the full model's parameter count."""
    xs, rss, secs = [], [], []
    for p in points:
        for r in p["runs"]:
            if r["rc"] == 0 and not r["v2"]:
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
    ap.add_argument("--compare-v1", action="store_true", help="with Converter V2 available, also run the default one")
    ap.add_argument("--rss-limit-gib", type=float, default=None,
                    help="kill a conversion whose process tree passes this RSS (default: RAM minus 1.5 GiB)")
    ap.add_argument("--work", type=Path, default=None, help="work directory (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the checkpoints and bundles")
    args = ap.parse_args()

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
            if fitted and not r["v2"]:
                print(f"measured / fitted peak RSS: {r['peak_rss_bytes'] / fitted['predicted_peak_rss_bytes']:.2f}x"
                      + (" (a lower bound: the run was stopped)" if r["stopped_at_limit"] else ""))
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
        print(json.dumps({"machine_ram_bytes": machine, "converter_v2": v2_ok, "points": points, "fit": fitted},
                         default=str))
        return 0 if all(r["rc"] == 0 for p in points for r in p["runs"]) else 1
    finally:
        if not args.keep and own_work:
            shutil.rmtree(args.work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
