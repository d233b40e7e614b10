"""`gemma4-mobile convert`: Hugging Face Gemma 4 checkpoint -> quantized .litertlm bundle(s)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from sdk_tools.cli.common import emit_json, err_console, progress_reporter
from sdk_tools.cli.options import JsonOption, VerboseOption


def _list_recipes(as_json: bool) -> None:
    from converters.recipes import describe_list, list_rows

    if as_json:
        emit_json(list_rows())
        return
    typer.echo(describe_list())


def _int_list(items: list[str], flag: str) -> list[int]:
    from gemma4_common.errors import UserError

    out = []
    for item in items:
        for part in str(item).split(","):
            part = part.strip().lower()
            if not part:
                continue
            mult = 1024 if part.endswith("k") else 1
            try:
                out.append(int(part[:-1] if mult > 1 else part) * mult)
            except ValueError:
                raise UserError(f"{flag} {part!r} is not a whole number", f"pass e.g. {flag} 4096,32k") from None
    if not out:
        raise UserError(f"{flag} is empty", f"pass e.g. {flag} 4096")
    return sorted(set(out))


def convert_cmd(
    checkpoint: Optional[Path] = typer.Argument(None, help="Hugging Face Gemma 4 checkpoint directory."),
    out: Optional[Path] = typer.Option(None, "-o", "--out",
                                       help="Bundle directory (one per recipe below it if several)."),
    recipe: List[str] = typer.Option(["dynamic_wi8_afp32"], "--recipe", "-r",
                                     help="Quantization recipe(s), repeatable or comma-separated; "
                                          "`--recipe list` shows them."),
    prefill: List[int] = typer.Option([128], "--prefill", help="Prefill signature length(s)."),
    cache_length: List[str] = typer.Option(["1024"], "--cache-length",
                                           help="KV cache length(s) (context), repeatable or comma-separated: "
                                                "several make one bundle with a signature set per length "
                                                "(see --bundle-per-cache-length)."),
    per_length: bool = typer.Option(False, "--bundle-per-cache-length",
                                    help="One bundle per cache length (OUT/ctx<N>, or OUT/<recipe>-ctx<N>): "
                                         "LiteRT-LM 0.18.1's CPU engine runs only single-length bundles."),
    npu: List[str] = typer.Option([], "--npu", help="NPU targets, e.g. qualcomm:SM8650,mediatek:MT6991."),
    npu_config: Optional[Path] = typer.Option(None, "--npu-config", help="Delegate config JSON for the NPU targets."),
    calibration: Optional[str] = typer.Option(None, "--calibration",
                                              help="Calibration prompts for static recipes and NPU variants: a chat "
                                                   "JSONL file, or `default` for the built-in chat/tool/JSON set."),
    ring_buffer: Optional[int] = typer.Option(None, "--sliding-window-ring-buffer",
                                              help="Ring-buffer size for sliding-window layers' KV cache."),
    name: Optional[str] = typer.Option(None, "--name", help="Bundle name in the manifest."),
    vision: bool = typer.Option(False, "--vision", help="Export the vision encoder (multimodal checkpoints)."),
    audio: bool = typer.Option(False, "--audio", help="Export the audio encoder (multimodal checkpoints)."),
    use_v2: bool = typer.Option(False, "--use-v2",
                                help="litert-torch Converter V2: stream weights from the checkpoint."),
    delete_params: bool = typer.Option(False, "--delete-in-memory-params",
                                       help="With --use-v2: free each weight once serialized (lower peak memory)."),
    converter: str = typer.Option("auto", "--converter",
                                  help="auto (lean for checkpoints too large for the default path on this host), "
                                       "default (litert-torch's export_hf) or lean (sections, one process each)."),
    ignore_memory: bool = typer.Option(False, "--ignore-memory-check",
                                       help="Convert even if the host's RAM is below the conversion's estimated peak."),
    force: bool = typer.Option(False, "--force", help="Replace an output directory that is not a bundle."),
    as_json: JsonOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Convert a checkpoint: validate, export (litert-torch), quantize, NPU-compile, bundle."""
    from converters.pipeline import ConvertRequest, convert
    from gemma4_common.errors import UserError

    if any(r.strip().lower() == "list" for r in recipe):
        _list_recipes(as_json)
        return
    if checkpoint is None:
        raise UserError("no checkpoint directory given", "run `gemma4-mobile convert CHECKPOINT_DIR -o OUT_DIR`")
    if out is None:
        raise UserError("no output directory given", "pass -o OUT_DIR")
    lengths = _int_list(cache_length, "--cache-length")
    req = ConvertRequest(checkpoint=checkpoint, out_dir=out, recipes=list(recipe), prefill_lengths=list(prefill),
                         cache_length=max(lengths), cache_lengths=lengths if len(lengths) > 1 else [],
                         force=force, npu_targets=list(npu), npu_config=npu_config,
                         sliding_window_ring_buffer_size=ring_buffer, name=name, vision=vision, audio=audio,
                         use_v2=use_v2 or delete_params, delete_in_memory_params=delete_params,
                         bundle_per_cache_length=per_length, ignore_memory_check=ignore_memory, converter=converter,
                         calibration=calibration)
    if len(lengths) > 1 and not per_length and not as_json:
        err_console.print("note: a bundle with several cache lengths names its signatures decode_cache_<N>; "
                          "LiteRT-LM 0.18.1's CPU engine runs only single-length bundles "
                          "(--bundle-per-cache-length makes one per length)", highlight=False)
    with progress_reporter(rich=not as_json) as progress:
        res = convert(req, progress)
    rows = []
    for path, m in zip(res.bundles, res.manifests):
        size = m["files"][m["main_model"]]["size"]
        rows.append({"bundle": str(path), "recipe": m["recipe"]["name"], "variant": m["variant"],
                     "cache_lengths": m["export"]["cache_lengths"],
                     "model_bytes": size, "sha256": m["files"][m["main_model"]]["sha256"],
                     "npu": m["npu"]["targets"]})
    if as_json:
        emit_json({"checkpoint": res.checkpoint.summary(), "bundles": rows, "timings_s": res.timings})
        return
    err_console.print(f"variant: {res.checkpoint.variant} ({res.checkpoint.num_parameters / 1e6:.2f}M params)",
                      highlight=False)
    for r in rows:
        ctx = ",".join(map(str, r["cache_lengths"]))
        typer.echo(f"{r['bundle']}  {r['recipe']:<22} ctx {ctx:<10} {r['model_bytes'] / 1e6:8.2f} MB")
        for t in r["npu"]:
            typer.echo(f"  npu {t['vendor']}:{t['soc']}: {t['status']}"
                       + (f" ({t['message']})" if t["message"] else ""))


def register(app: typer.Typer) -> None:
    app.command("convert")(convert_cmd)
