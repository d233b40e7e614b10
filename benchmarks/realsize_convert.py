"""Does a real-size E2B/E4B-shaped checkpoint convert on this machine? Peak RSS, time and int4 bundle size.

    python benchmarks/realsize_convert.py [--variant e2b] [--layers N] [--scale S] [--recipe int4]
                                          [--compare-v1] [--work DIR] [--keep]

Writes a text-only Gemma 4 checkpoint (Gemma4ForCausalLM, random bf16 weights of the published
shapes) straight to safetensors, tensor by tensor in row blocks, so generating it needs little
memory; then runs `gemma4-mobile convert --use-v2 --delete-in-memory-params` (litert-torch's streaming
Converter V2) in a child process and samples the RSS of its process tree. Each figure is printed
next to a peer from the same run, as a ratio: peak RSS next to the checkpoint size (and, with
--compare-v1, next to the legacy non-streaming converter), the bundle size next to the planner's
estimate and next to the "under 1.5 GB" claim. `--layers N` keeps the first N layers (the KV-shared
tail scaled in proportion) at full width; `--scale S` multiplies the widths (hidden, MLP, vocab).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
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


def tree_rss(pid: int) -> int:
    """RSS bytes of a process and all its descendants."""
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
            kids = Path(f"/proc/{p}/task/{p}/children").read_text().split()
            stack.extend(int(k) for k in kids)
        except (OSError, ValueError):
            pass
    return total


def run_convert(ckpt: Path, out: Path, recipe: str, v2: bool, cache: int) -> dict:
    exe = Path(sys.executable).with_name("gemma4-mobile")
    cmd = [str(exe), "convert", str(ckpt), "-o", str(out), "-r", recipe, "--cache-length", str(cache),
           "--force", "--json"] + (["--use-v2", "--delete-in-memory-params"] if v2 else [])
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = [0]

    def sample():
        while proc.poll() is None:
            peak[0] = max(peak[0], tree_rss(proc.pid))
            time.sleep(0.5)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    stdout, stderr = proc.communicate()
    th.join()
    wall = time.perf_counter() - t0
    res = {"v2": v2, "rc": proc.returncode, "wall_s": wall, "peak_rss_bytes": peak[0],
           "error": stderr.strip().splitlines()[-1] if proc.returncode else None}
    if proc.returncode == 0:
        d = json.loads(stdout)
        res["bundle_bytes"] = d["bundles"][0]["model_bytes"]
        res["timings_s"] = d["timings_s"]
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", default="e2b", choices=["e2b", "e4b"])
    ap.add_argument("--layers", type=int, default=None, help="keep the first N layers (default: all)")
    ap.add_argument("--scale", type=float, default=1.0, help="width multiplier (default 1 = real size)")
    ap.add_argument("--recipe", default="dynamic_wi4b32_afp32")
    ap.add_argument("--cache-length", type=int, default=4096)
    ap.add_argument("--compare-v1", action="store_true", help="also convert with the legacy (non-streaming) path")
    ap.add_argument("--work", type=Path, default=None, help="work directory (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the checkpoint and bundles")
    args = ap.parse_args()

    from converters.planner import ModelShape, estimate_bundle
    from converters.recipes import get_recipe
    work = args.work or Path(tempfile.mkdtemp(prefix="g4m-realsize-"))
    work.mkdir(parents=True, exist_ok=True)
    tc = text_config(args.variant, args.layers, args.scale)
    shape = ModelShape.from_config(tc, name=args.variant)
    est = estimate_bundle(shape, get_recipe(args.recipe), prefill_lengths=[128], cache_lengths=[args.cache_length])
    # float32 TFLite intermediates + the checkpoint + the bundle must fit on disk
    need = int(est.total * 32 / get_recipe(args.recipe).weight_bits * 1.3)
    free = shutil.disk_usage(work).free
    if free < need:
        print(f"not enough disk under {work}: need ~{need / 1e9:.1f} GB, {free / 1e9:.1f} GB free", file=sys.stderr)
        return 2
    label = f"{args.variant} {tc['num_hidden_layers']} layers, hidden {tc['hidden_size']}, vocab {tc['vocab_size']}"
    try:
        t0 = time.perf_counter()
        ckpt_bytes = write_checkpoint(tc, work / "ckpt")
        gen_s = time.perf_counter() - t0
        print(f"checkpoint: {label}: {ckpt_bytes / 1e9:.2f} GB bf16 written in {gen_s:.0f} s")
        runs = [run_convert(work / "ckpt", work / "bundle-v2", args.recipe, True, args.cache_length)]
        if args.compare_v1:
            runs.append(run_convert(work / "ckpt", work / "bundle-v1", args.recipe, False, args.cache_length))
        for r in runs:
            name = "converter v2 (streaming)" if r["v2"] else "converter v1 (legacy)"
            if r["rc"] != 0:
                print(f"{name}: FAILED after {r['wall_s']:.0f} s, peak RSS {r['peak_rss_bytes'] / 2**30:.2f} GiB: "
                      f"{r['error']}")
                continue
            print(f"{name}: {r['wall_s']:.0f} s, peak RSS {r['peak_rss_bytes'] / 2**30:.2f} GiB = "
                  f"{r['peak_rss_bytes'] / ckpt_bytes:.2f}x the checkpoint ({ckpt_bytes / 2**30:.2f} GiB)")
            print(f"  bundle ({args.recipe}): {r['bundle_bytes'] / 1e9:.3f} GB = "
                  f"{r['bundle_bytes'] / est.total:.3f}x the planner's estimate ({est.total / 1e9:.3f} GB), "
                  f"{r['bundle_bytes'] / CLAIM_BYTES:.2f}x the 1.5 GB claim")
            print(f"  steps: " + ", ".join(f"{k} {v:.0f} s" for k, v in r["timings_s"].items()))
        if len(runs) == 2 and all(r["rc"] == 0 for r in runs):
            v2, v1 = runs
            print(f"v2 / v1: peak RSS {v2['peak_rss_bytes'] / v1['peak_rss_bytes']:.2f}x, "
                  f"time {v2['wall_s'] / v1['wall_s']:.2f}x, bundle {v2['bundle_bytes'] / v1['bundle_bytes']:.3f}x")
        if shape.layers < 35 or args.scale != 1.0:
            full = ModelShape.from_config(text_config(args.variant, None, 1.0), name=args.variant)
            fe = estimate_bundle(full, get_recipe(args.recipe), prefill_lengths=[128],
                                 cache_lengths=[args.cache_length]).total
            print(f"full-size {args.variant} estimate: {fe / 1e9:.2f} GB = {fe / CLAIM_BYTES:.2f}x the 1.5 GB claim")
        print(json.dumps({"config": label, "checkpoint_bytes": ckpt_bytes, "estimate_bytes": est.total,
                          "runs": runs}, default=str))
        return 0 if all(r["rc"] == 0 for r in runs) else 1
    finally:
        if not args.keep and args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
