"""Verification: a bundle against its PyTorch checkpoint on the host (per-token log-probs,
perplexity, greedy continuations), and a device against the reference (the same prompts through
the runner contract on the device and on the reference emulator, and PyTorch's greedy text).

Alignment with LiteRT-LM (measured on the tiny models): `run_prefill` adds the BOS token itself, so
PyTorch greedy runs on BOS + prompt; `run_text_scoring` does not, and scoring after a prefill does
not line up with any PyTorch sequence, so the bundle scores `<bos>` + prompt + target in one
`run_text_scoring` call and the target's log-probs are the last ones."""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from converters.bundle import require_verified
from gemma4_common.errors import GateFailure, UserError
from gemma4_common.gemma4_format import cut_at_stop
from gemma4_common.progress import Progress
from sdk_tools.accuracy import gates as gates_lib
from sdk_tools.accuracy import metrics
from sdk_tools.accuracy.evalset import EvalItem

REPORT_FORMAT = "gemma4-mobile-verify/1"
KL_NOTE = ("KL divergence needs the bundle's full next-token distributions; LiteRT-LM's scoring API returns "
           "only the target token's log-prob, so KL is reported only where both sides give distributions")


def stop_sequences() -> list[str]:
    from gemma4_common.gemma4_format import STOP_SEQUENCES

    return list(STOP_SEQUENCES)


@dataclass
class VerifySettings:
    max_new_tokens: int = 32  # greedy continuation length per prompt
    seed: int = 0
    greedy: bool = True  # compare greedy continuations (the slow part on the reference side)

    def validate(self) -> None:
        if self.max_new_tokens < 1:
            raise UserError("--max-new-tokens must be at least 1", "pass e.g. --max-new-tokens 32")


# ---- the reference side -------------------------------------------------------------------------
@dataclass
class RefItem:
    ids: list[int]  # BOS + prompt + target tokens
    n_target: int
    logprobs: list[float]
    greedy: str | None  # normalized greedy continuation after BOS + prompt


@dataclass
class ReferenceRun:
    """PyTorch's side for one checkpoint and eval set; computed once and reused for many bundles."""

    checkpoint: str
    items: list[EvalItem]
    results: list[RefItem]
    bos: bool
    settings: VerifySettings
    reference: Any = field(repr=False, default=None)  # the TorchReference (its tokenizer, for positions)
    seconds: float = 0.0


def load_reference(checkpoint: Path | str):
    from sdk_tools.accuracy.reference import TorchReference

    checkpoint = Path(checkpoint)
    if not checkpoint.is_dir():
        raise UserError(f"checkpoint directory {checkpoint} does not exist",
                        "pass --checkpoint with the Hugging Face checkpoint the bundle was converted from")
    return TorchReference(checkpoint)


def reference_run(ref, items: Sequence[EvalItem], settings: VerifySettings, *, bos: bool = True,
                  progress: Progress | None = None) -> ReferenceRun:
    progress = progress or Progress()
    stop = stop_sequences()
    out: list[RefItem] = []
    t0 = time.perf_counter()
    with progress.step(f"PyTorch reference: {len(items)} prompts", total=len(items)):
        for it in items:
            s = ref.score(it.prompt, it.target, add_bos=bos)
            g = None
            if settings.greedy:
                g = cut_at_stop(ref.greedy(it.prompt, settings.max_new_tokens, stop=stop), stop)[0]
            out.append(RefItem(ids=list(s.ids), n_target=len(s.target_ids), logprobs=list(s.logprobs), greedy=g))
            progress.advance(1)
    return ReferenceRun(str(ref.checkpoint), list(items), out, bos, settings, ref, time.perf_counter() - t0)


def _item_need(tokenize: Callable[[str], Sequence[int]], it: EvalItem, cache: int,
               max_new_tokens: int) -> tuple[int, int, int] | None:
    """(need, prompt, target) tokens of an item that cannot fit the cache; None when it fits."""
    # a token covers at least one byte: a text of at most `cache` bytes needs no tokenizer run
    if len(it.prompt.encode("utf-8", "surrogatepass")) + len(it.target.encode("utf-8", "surrogatepass")) \
            + max_new_tokens + 1 <= cache:
        return None
    prompt, target = len(tokenize(it.prompt)), len(tokenize(it.target))
    need = 1 + prompt + target + max_new_tokens
    return (need, prompt, target) if need > cache else None


def fit_items(tokenize: Callable[[str], Sequence[int]], items: Sequence[EvalItem], cache: int,
              max_new_tokens: int) -> tuple[list[int], list[dict[str, Any]]]:
    """Which evaluation items fit the bundle's KV cache (BOS + prompt + target + --max-new-tokens):
    their indices, and one record per item that does not, which is skipped (scoring a huge item
    would try to allocate its whole attention on the PyTorch side: terabytes). Checked before
    either side runs."""
    keep, skipped = [], []
    for i, it in enumerate(items):
        over = _item_need(tokenize, it, cache, max_new_tokens)
        if over is None:
            keep.append(i)
        else:
            skipped.append({"item": i + 1, "kind": it.kind, "needs_tokens": over[0], "prompt_tokens": over[1],
                            "target_tokens": over[2], "cache": cache})
    return keep, skipped


def skipped_note(skipped: Sequence[dict[str, Any]], total: int, cache: int, max_new_tokens: int) -> str | None:
    if not skipped:
        return None
    worst = max(s["needs_tokens"] for s in skipped)
    return (f"{len(skipped)} of {total} evaluation items skipped: they need more tokens than the bundle's cache "
            f"({cache}; BOS + prompt + target + {max_new_tokens} new, up to {worst}); items "
            + ", ".join(str(s["item"]) for s in skipped[:20]) + (" ..." if len(skipped) > 20 else ""))


def _select_fitting(tokenize: Callable[[str], Sequence[int]], items: list[EvalItem], reference, cache: int,
                    max_new_tokens: int):
    """(items that fit, the reference run cut to them, their indices, skip records); exit 2 only
    when nothing fits."""
    keep, skipped = fit_items(tokenize, items, cache, max_new_tokens)
    require_some_left(keep, skipped, cache, max_new_tokens)
    if reference is not None and len(reference.items) == len(items) and len(reference.results) == len(items):
        reference = replace(reference, items=[reference.items[i] for i in keep],
                            results=[reference.results[i] for i in keep])
    return [items[i] for i in keep], reference, keep, skipped


def require_some_left(keep: Sequence[int], skipped: Sequence[dict[str, Any]], cache: int,
                      max_new_tokens: int) -> None:
    """Exit 2 only when nothing is left to evaluate."""
    if keep:
        return
    first = skipped[0] if skipped else None
    detail = (f": item {first['item']} needs {first['needs_tokens']} tokens (BOS, {first['prompt_tokens']} prompt, "
              f"{first['target_tokens']} target, {max_new_tokens} new)") if first else ""
    raise UserError(f"no evaluation item fits the bundle's cache ({cache}){detail}",
                    "shorten the items (or --max-new-tokens), or convert with a longer --cache-length")


def _tokenize_fn(ref) -> Callable[[str], list[int]]:
    return lambda text: ref.tokenizer(text, add_special_tokens=False)["input_ids"]


# ---- the bundle on the host ---------------------------------------------------------------------
def _bundle_side(eng, items: Sequence[EvalItem], rr: ReferenceRun, settings: VerifySettings,
                 progress: Progress) -> list[metrics.ItemResult]:
    ref = rr.reference
    bos_text = ref.tokenizer.bos_token if rr.bos else ""
    stop = stop_sequences()
    results = []
    with progress.step(f"bundle on LiteRT-LM: {len(items)} prompts", total=len(items)):
        for i, (it, r) in enumerate(zip(items, rr.results)):
            full = bos_text + it.prompt + it.target
            scores = eng.score_text(full)
            eng_ids = list(eng.tokenize(full))
            aligned = eng_ids == r.ids and len(scores) >= r.n_target
            if aligned:
                own = scores[len(scores) - r.n_target:]
                bundle_lps = own
            else:
                # Another tokenization: the bundle's own target tokens still give it a perplexity.
                k = max(1, len(eng_ids) - len(eng.tokenize(bos_text + it.prompt)))
                own = scores[len(scores) - k:] if scores else []
                bundle_lps = None
            text = None
            if settings.greedy:
                g = eng.generate(it.prompt, max_new_tokens=settings.max_new_tokens, stop=stop, seed=settings.seed)
                text = cut_at_stop(g.text, stop)[0]
            div = None
            if text is not None and r.greedy is not None and text != r.greedy:
                tok = _tokenize_fn(ref)
                div = metrics.first_divergence(tok(r.greedy), tok(text))
                div = 0 if div is None else div
            results.append(metrics.ItemResult(index=i, kind=it.kind, ref_logprobs=r.logprobs,
                                              bundle_logprobs=bundle_lps, bundle_own_logprobs=own,
                                              tokens_match=aligned, ref_text=r.greedy, bundle_text=text,
                                              divergence=div))
            progress.advance(1)
    return results


def _bundle_info(bundle_dir: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    main = manifest["main_model"]
    recipe = manifest.get("recipe")
    return {"path": str(bundle_dir), "name": manifest.get("name"),
            "recipe": recipe.get("name") if isinstance(recipe, dict) else recipe,
            "model_bytes": (manifest.get("files") or {}).get(main, {}).get("size"),
            "source_sha256": (manifest.get("source") or {}).get("sha256")}


def _source_check(manifest: dict[str, Any], checkpoint: Path) -> tuple[bool | None, str | None]:
    from converters.checkpoint import checkpoint_hash

    want = (manifest.get("source") or {}).get("sha256")
    if not want:
        return None, None
    if checkpoint_hash(checkpoint) == want:
        return True, None
    return False, ("the bundle's manifest says it was converted from another checkpoint "
                   "(source sha256 differs): the comparison measures that difference too")


def verify_host(bundle_dir: Path | str, checkpoint: Path | str, items: Sequence[EvalItem], *,
                settings: VerifySettings | None = None, overrides: dict[str, Any] | None = None,
                reference: ReferenceRun | None = None, progress: Progress | None = None) -> dict[str, Any]:
    """Bundle vs PyTorch on `items`; the report dict (see `report_failures` for the gate outcome)."""
    from on_device.engine import HostEngine

    settings = settings or VerifySettings()
    settings.validate()
    progress = progress or Progress()
    bundle_dir, checkpoint = Path(bundle_dir), Path(checkpoint)
    manifest = require_verified(bundle_dir)
    cls, g = gates_lib.gates_for(_bundle_info(bundle_dir, manifest)["recipe"], overrides)
    source_match, source_note = _source_check(manifest, checkpoint)
    cache = int((manifest.get("export") or {}).get("cache_length") or 1024)
    items = list(items)
    total = len(items)
    with HostEngine(bundle_dir / manifest["main_model"], max_num_tokens=cache) as eng:
        items, reference, keep, skipped = _select_fitting(eng.tokenize, items, reference, cache,
                                                          settings.max_new_tokens)
        if reference is None or reference.reference is None:
            with progress.step("load PyTorch checkpoint"):
                ref = load_reference(checkpoint)
            bos = ref.bos_token_id is not None and list(eng.tokenize(ref.tokenizer.bos_token)) == [ref.bos_token_id]
            reference = reference_run(ref, items, settings, bos=bos, progress=progress)
        rr = reference
        # Counted with the reference's own tokenizer: an item may still not fit.
        fits = [k for k, r in enumerate(rr.results) if len(r.ids) + settings.max_new_tokens <= cache]
        for k, r in enumerate(rr.results):
            if k not in fits:
                it = rr.items[k]
                given = keep[k] + 1 if len(rr.results) == len(keep) else k + 1  # numbered as given
                skipped.append({"item": given, "kind": it.kind,
                                "needs_tokens": len(r.ids) + settings.max_new_tokens, "prompt_tokens": None,
                                "target_tokens": r.n_target, "cache": cache})
        if len(fits) < len(rr.results):
            require_some_left(fits, skipped, cache, settings.max_new_tokens)
            rr = replace(rr, items=[rr.items[k] for k in fits], results=[rr.results[k] for k in fits])
        results = _bundle_side(eng, rr.items, rr, settings, progress)
    summary = metrics.summarize(results).to_dict()
    notes = [KL_NOTE]
    skip_note = skipped_note(skipped, total, cache, settings.max_new_tokens)
    if skip_note:
        notes.append(skip_note)
    if source_note:
        notes.append(source_note)
    if not rr.bos:
        notes.append("the bundle's tokenizer has no BOS token text; both sides were scored without BOS")
    if summary["tokenizer_mismatches"]:
        notes.append(f"{summary['tokenizer_mismatches']} of {len(results)} items tokenize differently in the bundle "
                     "than in the checkpoint (wrong tokenizer?): their per-token deltas are left out")
    summary["notes"] = notes
    checks = gates_lib.check_host(summary, g)
    return {
        "format": REPORT_FORMAT,
        "mode": "host",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "bundle": _bundle_info(bundle_dir, manifest),
        "checkpoint": str(checkpoint),
        "source_match": source_match,
        "eval": {"items": len(results), "kinds": sorted({i.kind for i in rr.items if i.kind}),
                 "given": total, "skipped": len(skipped), "skipped_items": skipped, "skipped_note": skip_note},
        "settings": asdict(settings),
        "recipe_class": cls,
        "gates": asdict(g),
        "summary": summary,
        "gate_results": [asdict(c) for c in checks],
        "passed": all(c.passed for c in checks),
        "items": [r.to_dict() for r in results],
    }


# ---- a device against the reference -------------------------------------------------------------
def _device_generations(device, bundle_dir: Path, items: Sequence[EvalItem], settings: VerifySettings,
                        runner, backend: str | None, progress: Progress) -> tuple[list[str], dict]:
    from sdk_tools.engines import open_text_engine

    stop = stop_sequences()
    out = []
    with open_text_engine(bundle_dir, device, runner=runner, backend=backend, seed=settings.seed,
                          progress=progress) as eng, \
            progress.step(f"{device.serial}: {len(items)} prompts through the runner", total=len(items)):
        for it in items:
            out.append(cut_at_stop(eng.generate(it.prompt, settings.max_new_tokens, stop), stop)[0])
            progress.advance(1)
    dep = eng.deployment
    info = {"serial": device.serial, "backend": dep.backend, "model_path": str(dep.model_path),
            "manifest_hash": dep.manifest_hash}
    return out, info


def _host_reference_generations(bundle_dir: Path, items: Sequence[EvalItem], settings: VerifySettings,
                                progress: Progress) -> list[str]:
    """What the reference emulator's runner does for each prompt (host LiteRT-LM CPU, greedy)."""
    from sdk_tools.engines import open_text_engine

    stop = stop_sequences()
    out = []
    with open_text_engine(bundle_dir, seed=settings.seed) as eng, \
            progress.step(f"reference (host LiteRT-LM CPU): {len(items)} prompts", total=len(items)):
        for it in items:
            out.append(cut_at_stop(eng.generate(it.prompt, settings.max_new_tokens, stop), stop)[0])
            progress.advance(1)
    return out


def verify_device(bundle_dir: Path | str, checkpoint: Path | str | None, items: Sequence[EvalItem], serial: str, *,
                  reference_serial: str | None = None, runner: Path | str | None = None, backend: str | None = "cpu",
                  settings: VerifySettings | None = None, overrides: dict[str, Any] | None = None,
                  reference: ReferenceRun | None = None, open_device: Callable[[str], Any] | None = None,
                  progress: Progress | None = None) -> dict[str, Any]:
    """The same prompts through the runner contract on `serial` and on the reference (another
    device, normally the reference emulator, or else the host engine the emulator runs), greedy
    with a fixed seed; per-prompt agreement and first divergence, and agreement with PyTorch."""
    from sdk_tools.devices.discovery import open_device as default_open

    settings = settings or VerifySettings()
    settings.validate()
    progress = progress or Progress()
    opener = open_device or default_open
    bundle_dir = Path(bundle_dir)
    manifest = require_verified(bundle_dir)
    info = _bundle_info(bundle_dir, manifest)
    cls, g = gates_lib.gates_for(info["recipe"], overrides)
    cache = int((manifest.get("export") or {}).get("cache_length") or 1024)
    items = list(items)
    from on_device.engine import HostEngine

    total = len(items)
    with HostEngine(bundle_dir / manifest["main_model"], max_num_tokens=cache) as eng:
        items, reference, keep, skipped = _select_fitting(eng.tokenize, items, reference, cache,
                                                          settings.max_new_tokens)
    skip_note = skipped_note(skipped, total, cache, settings.max_new_tokens)

    with opener(serial) as dev:
        dev_texts, dev_info = _device_generations(dev, bundle_dir, items, settings, runner, backend, progress)
    if reference_serial:
        with opener(reference_serial) as rdev:
            ref_texts, ref_info = _device_generations(rdev, bundle_dir, items, settings, runner, "cpu", progress)
        ref_info["kind"] = "device"
    else:
        ref_texts = _host_reference_generations(bundle_dir, items, settings, progress)
        ref_info = {"kind": "host LiteRT-LM CPU engine (what the reference emulator's runner runs)"}

    torch_ref = None
    if reference is not None and reference.reference is not None:
        torch_ref = reference.reference
    elif checkpoint is not None:
        with progress.step("load PyTorch checkpoint"):
            torch_ref = load_reference(checkpoint)
    if torch_ref is not None:
        tokenize = _tokenize_fn(torch_ref)
    else:
        from on_device.engine import HostEngine

        with HostEngine(bundle_dir / manifest["main_model"], max_num_tokens=cache) as eng:
            cache_ids = {t: list(eng.tokenize(t)) for t in {*dev_texts, *ref_texts}}
        tokenize = lambda t: cache_ids[t]  # noqa: E731

    vs_ref = metrics.agreement(dev_texts, ref_texts, tokenize, labels=("device", "reference"))
    vs_torch = None
    if torch_ref is not None:
        if reference is not None and all(r.greedy is not None for r in reference.results) \
                and len(reference.results) == len(items):
            torch_texts = [r.greedy for r in reference.results]
        else:
            stop = stop_sequences()
            torch_texts = []
            with progress.step(f"PyTorch greedy: {len(items)} prompts", total=len(items)):
                for it in items:
                    torch_texts.append(cut_at_stop(
                        torch_ref.greedy(it.prompt, settings.max_new_tokens, stop=stop), stop)[0])
                    progress.advance(1)
        vs_torch = metrics.agreement(dev_texts, torch_texts, tokenize, labels=("device", "pytorch"))
    checks = gates_lib.check_device(vs_ref.rate, vs_torch.rate if vs_torch else None, g)
    per_prompt = []
    for i, row in enumerate(vs_ref.per_prompt):
        p = {"index": i, "kind": items[i].kind, "device": row["device"], "reference": row["reference"],
             "match": row["match"], "first_divergence": row["first_divergence"]}
        if vs_torch is not None:
            t = vs_torch.per_prompt[i]
            p.update(pytorch=t["pytorch"], pytorch_match=t["match"], pytorch_first_divergence=t["first_divergence"])
        per_prompt.append(p)
    return {
        "format": REPORT_FORMAT,
        "mode": "device",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "bundle": info,
        "checkpoint": str(checkpoint) if checkpoint else None,
        "device": dev_info,
        "reference": ref_info,
        "eval": {"items": len(items), "given": total, "skipped": len(skipped), "skipped_items": skipped,
                 "skipped_note": skip_note},
        "settings": asdict(settings),
        "recipe_class": cls,
        "gates": asdict(g),
        "summary": {"device_agreement": vs_ref.rate, "device_matches": vs_ref.matches, "prompts": vs_ref.total,
                    "device_greedy_agreement": vs_torch.rate if vs_torch else None,
                    "first_divergences": [r["first_divergence"] for r in vs_ref.per_prompt if not r["match"]]},
        "gate_results": [asdict(c) for c in checks],
        "passed": all(c.passed for c in checks),
        "per_prompt": per_prompt,
    }


# ---- outcome ------------------------------------------------------------------------------------
def failed_gates(report: dict[str, Any]) -> list[gates_lib.GateResult]:
    return [gates_lib.GateResult(**c) for c in report["gate_results"] if not c["passed"]]


def raise_on_failure(report: dict[str, Any]) -> None:
    bad = failed_gates(report)
    if bad:
        raise GateFailure(f"{report['bundle'].get('recipe') or 'bundle'} ({report['recipe_class']} gates): "
                          + "; ".join(b.line() for b in bad))


def write_report(report: dict[str, Any], path: Path | str, flag: str = "-o") -> Path:
    from gemma4_common.fsutil import write_output_text

    return write_output_text(path, json.dumps(report, indent=2, default=_json_default) + "\n", flag)


def _json_default(o: Any) -> Any:
    if isinstance(o, float) and math.isnan(o):
        return None
    return str(o)


def summary_lines(report: dict[str, Any]) -> list[str]:
    """Plain result lines for people."""
    b = report["bundle"]
    lines = [f"bundle {b.get('name') or b['path']} ({b.get('recipe')}, {report['recipe_class']} gates), "
             f"{report['eval']['items']} prompts"]
    s = report["summary"]
    if report["mode"] == "host":
        def f(x, spec=".4f"):
            return "n/a" if x is None else format(x, spec)
        lines.append(f"log-prob delta: mean {f(s['mean_logprob_delta'])}  p99 {f(s['p99_logprob_delta'])}  "
                     f"max {f(s['max_logprob_delta'])}  ({s['scored_tokens']} tokens)")
        lines.append(f"perplexity: reference {f(s['ref_ppl'])}  bundle {f(s['bundle_ppl'])}  "
                     f"ratio {f(s['ppl_ratio'])}")
        lines.append(f"greedy agreement: {f(s['greedy_agreement'], '.1%')} of {s['greedy_items']}"
                     + (f", mean first divergence at token {s['mean_first_divergence']:.1f}"
                        if s.get("mean_first_divergence") is not None else ""))
        lines.append("KL divergence: " + ("n/a (" + KL_NOTE.split(';')[1].strip() + ")" if s.get("kl_mean") is None
                                          else f"{s['kl_mean']:.4g}"))
        if report.get("source_match") is False:
            lines.append("note: the bundle was converted from another checkpoint than --checkpoint")
    else:
        lines.append(f"device {report['device']['serial']} vs reference: {s['device_matches']}/{s['prompts']} "
                     f"prompts identical" + (f"; vs PyTorch {s['device_greedy_agreement']:.1%}"
                                             if s.get("device_greedy_agreement") is not None else ""))
        for p in report["per_prompt"]:
            if not p["match"]:
                lines.append(f"  prompt {p['index']}: first divergence at token {p['first_divergence']}: "
                             f"device {p['device'][:50]!r} vs reference {p['reference'][:50]!r}")
    if (report.get("eval") or {}).get("skipped_note"):
        lines.append("note: " + report["eval"]["skipped_note"])
    for c in report["gate_results"]:
        r = gates_lib.GateResult(**c)
        lines.append(("PASS " if r.passed else "FAIL ") + r.line())
    return lines
