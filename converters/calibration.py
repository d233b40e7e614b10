"""Calibration data for static quantization: chat-format JSONL (or the built-in set of chat, tool and
JSON prompts) rendered in the Gemma 4 format, checked against the cache, hashed for the manifest, and
run through the float model's prefill/decode signatures into ai-edge-quantizer's `calibrate`."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from gemma4_common.errors import UserError

DEFAULT_SET = Path(__file__).with_name("calibration_default.jsonl")
DEFAULT_NAME = "default"
# Greedy decode steps per prompt after its prefill: the decode signature sees the model's own tokens.
DECODE_STEPS = 16
# Additive attention-mask value for hidden positions. exp(-30) is ~1e-13 of a visible score, and a
# small magnitude keeps the mask's quantization range (and that of the add it feeds) fine-grained;
# a runtime's larger negative saturates to it.
MASK_VALUE = -30.0
SAMPLE_BUDGET_BYTES = 256 << 20
_ROLES = {"system", "user", "model", "assistant", "tool"}
_FIX = ("each line must be a JSON object with \"messages\": [{\"role\": \"user\", \"content\": ...}, ...] "
        "(roles system/user/model/tool; optional \"tools\"), or \"prompt\": a Gemma 4 formatted text")


@dataclass
class CalibrationSet:
    name: str  # "default" or the file's path
    prompts: list[str]  # rendered Gemma 4 text, starting at the first turn (no BOS)
    sha256: str  # of the rendered prompts, so the same data hashes the same from a file or the built-in set
    lines: list[int] = field(default_factory=list)  # source line of each prompt

    def manifest_entry(self) -> dict[str, Any]:
        return {"name": self.name, "sha256": self.sha256, "prompts": len(self.prompts),
                "decode_steps": DECODE_STEPS}


def _render(obj: dict[str, Any], where: str) -> str:
    # One Gemma 4 renderer (gemma4_common, pure stdlib) for the agent, the tiny-model corpus and calibration.
    from gemma4_common.gemma4_format import Message, ToolSpec, render_prompt

    if "messages" in obj:
        msgs = obj["messages"]
        if not isinstance(msgs, list) or not msgs:
            raise UserError(f"{where}: \"messages\" must be a non-empty list", _FIX)
        parsed = []
        for j, m in enumerate(msgs):
            if not isinstance(m, dict) or m.get("role") not in _ROLES:
                raise UserError(f"{where}: message {j} has no role of {'/'.join(sorted(_ROLES))}", _FIX)
            if not isinstance(m.get("content", ""), str):
                raise UserError(f"{where}: message {j}'s content is not a string", _FIX)
            d = dict(m)
            if d["role"] == "assistant":
                d["role"] = "model"
            parsed.append(Message.from_dict(d))
        if not any(m.role == "user" for m in parsed):
            raise UserError(f"{where}: the conversation has no user message", _FIX)
        tools = obj.get("tools") or []
        if not isinstance(tools, list) or not all(isinstance(t, dict) and "name" in t for t in tools):
            raise UserError(f"{where}: \"tools\" must be a list of {{\"name\", \"description\", \"parameters\"}}", _FIX)
        ends_with_model = parsed[-1].role == "model" and not parsed[-1].tool_calls
        try:
            return render_prompt(parsed, tools=[ToolSpec.from_dict(t) for t in tools], system=obj.get("system"),
                                 add_generation_prompt=not ends_with_model, add_bos=False)
        except (ValueError, KeyError, TypeError) as e:
            raise UserError(f"{where}: cannot render the conversation ({e})", _FIX) from None
    if "prompt" in obj:
        p = obj["prompt"]
        if not isinstance(p, str) or "<|turn>" not in p:
            raise UserError(f"{where}: \"prompt\" is not a Gemma 4 formatted text (no <|turn> marker)", _FIX)
        return p[len("<bos>"):] if p.startswith("<bos>") else p
    raise UserError(f"{where}: no \"messages\" or \"prompt\" key", _FIX)


def load_set(spec: str | Path | None) -> CalibrationSet:
    """`default` (or None) for the built-in set, else a JSONL file path."""
    builtin = spec is None or str(spec) == DEFAULT_NAME
    path = DEFAULT_SET if builtin else Path(spec).expanduser()
    label = DEFAULT_NAME if builtin else str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"calibration file {path} does not exist",
                        "pass --calibration FILE.jsonl, or --calibration default for the built-in set") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read calibration file {path} ({e})", "pass a UTF-8 JSONL file") from None
    prompts, lines = [], []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"calibration file {path} line {n}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{where} is not JSON ({e.msg}, column {e.colno})", _FIX) from None
        if not isinstance(obj, dict):
            raise UserError(f"{where} is not a JSON object", _FIX)
        prompts.append(_render(obj, where))
        lines.append(n)
    if not prompts:
        raise UserError(f"calibration file {path} holds no prompts",
                        "add one chat per line, or pass --calibration default for the built-in set")
    return CalibrationSet(label, prompts, _digest(prompts), lines)


def _digest(prompts: Sequence[str]) -> str:
    return hashlib.sha256("\x00".join(prompts).encode()).hexdigest()


def check_lengths(cs: CalibrationSet, tokenize: Callable[[str], Sequence[int]], cache_length: int) -> list[list[int]]:
    """Token ids of every prompt (BOS first); a prompt of the user's that with its decode steps
    overflows the cache is refused. The built-in set drops such prompts instead (its long tool
    prompts suit real caches, not a 256-token test one); `cs` then holds, and hashes, what is used."""
    out, kept = [], []
    for prompt, line in zip(cs.prompts, cs.lines):
        ids = list(tokenize(prompt))
        need = len(ids) + DECODE_STEPS
        if need > cache_length:
            if cs.name == DEFAULT_NAME:
                continue
            raise UserError(f"calibration prompt on line {line} of {cs.name} needs {need} tokens "
                            f"({len(ids)} + {DECODE_STEPS} decode steps), more than the cache length {cache_length}",
                            "shorten or drop that prompt, or convert with a longer --cache-length")
        out.append(ids)
        kept.append((prompt, line))
    if not out:
        raise UserError(f"no prompt of the built-in calibration set fits the cache length {cache_length} "
                        f"with its {DECODE_STEPS} decode steps",
                        "convert with a longer --cache-length, or pass --calibration FILE.jsonl with shorter prompts")
    if len(kept) < len(cs.prompts):
        cs.prompts, cs.lines = [p for p, _ in kept], [n for _, n in kept]
        cs.sha256 = _digest(cs.prompts)
    return out


def checkpoint_tokenizer(checkpoint: Path) -> Callable[[str], list[int]]:
    """BOS + the checkpoint tokenizer's ids (what the runtime's prefill sees)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(checkpoint)
    bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
    return lambda text: bos + tok(text, add_special_tokens=False)["input_ids"]


def resolve(spec: str | None, recipes: Sequence[Any], npu: bool, checkpoint: Path,
            cache_length: int) -> tuple[CalibrationSet | None, list[list[int]] | None]:
    """The request's calibration data, or None when nothing needs it; refuses a static recipe
    without it. NPU variants calibrate on the built-in set unless --calibration names another."""
    static = [r for r in recipes if r.needs_calibration]
    if spec is None and static:
        raise UserError(f"recipe {static[0].name} is static (calibrated int activations) and needs calibration data",
                        "pass --calibration FILE.jsonl (chat-format prompts), or --calibration default for the "
                        "built-in chat/tool/JSON set")
    if spec is None and not npu:
        return None, None
    cs = load_set(spec)
    ids = check_lengths(cs, checkpoint_tokenizer(checkpoint), cache_length)
    return cs, ids


# ---- running it -----------------------------------------------------------------------------------
def _signature_inputs(runner) -> dict[str, Any]:
    return {n: d for n, d in runner.get_input_details().items()}


def _mask(rows: Sequence[int], width: int) -> Any:
    import numpy as np

    m = np.full((1, 1, len(rows), width), MASK_VALUE, dtype=np.float32)
    for i, p in enumerate(rows):
        m[0, 0, i, : p + 1] = 0.0
    return m


class SignatureFeeder:
    """Runs the prefill/decode signatures of an exported LiteRT-LM model (tokens, input_pos, mask,
    kv_cache_*) the way the runtime does. On the float model it yields each call's inputs (the
    calibration samples); with `quantized_io` (a statically quantized model, whose mask, KV-cache
    and logits are int tensors) it quantizes inputs and dequantizes outputs at the signature."""

    def __init__(self, model_path: str | Path, quantized_io: bool = False):
        from ai_edge_litert import interpreter as interpreter_lib

        self.it = interpreter_lib.Interpreter(model_path=str(model_path), num_threads=1)
        self.quantized_io = quantized_io
        sigs = self.it.get_signature_list()
        self.prefill_sigs = sorted((int(k.split("_")[1]), k) for k in sigs
                                   if k.startswith("prefill_") and k.split("_")[1].isdigit() and len(k.split("_")) == 2)
        if "decode" not in sigs or not self.prefill_sigs:
            raise UserError("the exported model has no prefill_<N>/decode signatures to run",
                            "calibrated recipes need a text-generation export with a single cache length")
        self.runners = {k: self.it.get_signature_runner(k) for k in [k for _, k in self.prefill_sigs] + ["decode"]}
        dec = _signature_inputs(self.runners["decode"])
        self.kv_names = [n for n in dec if n.startswith("kv_cache_")]
        self.kv_shapes = {n: tuple(dec[n]["shape"]) for n in self.kv_names}
        self.cache = int(dec["mask"]["shape"][-1])

    def zero_cache(self) -> dict[str, Any]:
        import numpy as np

        return {n: np.zeros(s, dtype=np.float32) for n, s in self.kv_shapes.items()}

    def run(self, sig: str, inputs: dict[str, Any]) -> dict[str, Any]:
        runner = self.runners[sig]
        want = _signature_inputs(runner)
        inputs = {k: v for k, v in inputs.items() if k in want}
        if not self.quantized_io:
            return runner(**inputs)
        from litert_torch.generative.export_hf.experimental.calib import sampling_executor

        return sampling_executor.try_run_signature_with_quant_dequant(inputs, runner)

    def _prefill_calls(self, head: list[int], pos: int):
        import numpy as np

        while head:
            size, sig = next(((n, k) for n, k in self.prefill_sigs if n >= len(head)), self.prefill_sigs[-1])
            chunk, head = head[:size], head[size:]
            rows = list(range(pos, pos + size))
            yield sig, {"tokens": np.array([chunk + [0] * (size - len(chunk))], dtype=np.int32),
                        "input_pos": np.array(rows, dtype=np.int32),
                        "mask": _mask([min(r, pos + len(chunk) - 1) for r in rows], self.cache)}, len(chunk)
            pos += len(chunk)

    def _decode_inputs(self, tok: int, pos: int) -> dict[str, Any]:
        import numpy as np

        return {"tokens": np.array([[tok]], dtype=np.int32), "input_pos": np.array([pos], dtype=np.int32),
                "mask": _mask([pos], self.cache)}

    def prefill(self, ids: Sequence[int]) -> tuple[dict[str, Any], int]:
        kv, pos = self.zero_cache(), 0
        for sig, inputs, n in self._prefill_calls(list(ids), 0):
            out = self.run(sig, {**inputs, **kv})
            kv = {k: out[k] for k in self.kv_names if k in out} or kv
            pos += n
        return kv, pos

    def decode(self, tok: int, pos: int, kv: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        out = self.run("decode", {**self._decode_inputs(tok, pos), **kv})
        return out["logits"][0, -1], {k: out[k] for k in self.kv_names}

    def samples(self, ids: Sequence[int], decode_steps: int = DECODE_STEPS):
        """(signature, inputs) for one prompt: prefill of all but the last token, then greedy decode."""
        import numpy as np

        kv, pos = self.zero_cache(), 0
        for sig, inputs, n in self._prefill_calls(list(ids[:-1]), 0):
            inputs = self._only(sig, {**inputs, **kv})
            yield sig, inputs
            out = self.run(sig, inputs)
            kv = {k: out[k] for k in self.kv_names if k in out} or kv
            pos += n
        tok = ids[-1]
        for _ in range(decode_steps):
            inputs = self._only("decode", {**self._decode_inputs(tok, pos), **kv})
            yield "decode", inputs
            logits, kv = self.decode(tok, pos, kv)
            tok = int(np.argmax(logits))
            pos += 1

    def _only(self, sig: str, inputs: dict[str, Any]) -> dict[str, Any]:
        want = _signature_inputs(self.runners[sig])
        return {k: v for k, v in inputs.items() if k in want}


def align_kv_cache(qsvs: dict[str, Any], model_path: str) -> None:
    """One range per KV-cache tensor across prefill and decode (what litert-torch's NPU quantize
    stage does), so that a cache written by one signature reads back unchanged in the next."""
    from litert_torch.generative.export_hf.experimental.calib import quant_utils

    with contextlib.redirect_stdout(io.StringIO()):
        quant_utils.align_kv_cache_params(calibration_results=qsvs, model_path=str(model_path),
                                          kv_cache_k_patterns=["kv_cache_k_{}"], kv_cache_v_patterns=["kv_cache_v_{}"])


def calibrator_for(prompt_ids: list[list[int]], progress: Callable[[int], None] | None = None):
    """The `calibrate(model_path, quantizer)` hook export.quantize_artifacts calls for a static recipe:
    ai-edge-quantizer's Quantizer.calibrate over every prompt's signature calls, streamed prompt by
    prompt (each call resumes from the previous result)."""

    def calibrate(model_path: str, qt: Any) -> dict[str, Any]:
        feeder = SignatureFeeder(model_path)
        result = None
        data: dict[str, list[dict[str, Any]]] = {}
        held, pending = 0, 0
        for i, ids in enumerate(prompt_ids):
            for sig, inputs in feeder.samples(ids):
                sample = {k: v.copy() for k, v in inputs.items()}
                held += sum(v.nbytes for v in sample.values())
                data.setdefault(sig, []).append(sample)
            pending += 1
            # Each calibrate call parses the model anew: batch prompts, flushing when the samples
            # (KV caches mostly) pass the budget so that real-size models stream.
            if held > SAMPLE_BUDGET_BYTES or i == len(prompt_ids) - 1:
                result = qt.calibrate(data, previous_calibration_result=result, num_threads=2)
                data, held = {}, 0
                if progress:
                    progress(pending)
                pending = 0
        result = result or {}
        align_kv_cache(result, model_path)
        return result

    return calibrate


# ---- the convert pipeline's hooks ------------------------------------------------------------------
@dataclass
class CalibrationPlan:
    set: CalibrationSet
    ids: list[list[int]]  # BOS + tokens of each prompt (checked against the cache)


def plan_calibration(req: Any, recipes: Sequence[Any], npu_specs: Sequence[Any]) -> CalibrationPlan | None:
    """Validate the request's calibration data up front (one-line errors before any export)."""
    if npu_specs:
        from converters.npu.variant import check_recipes

        check_recipes(list(recipes), list(npu_specs))
    spec = getattr(req, "calibration", None)
    cs, ids = resolve(spec, recipes, bool(npu_specs), req.checkpoint, min(req.all_cache_lengths()))
    return None if cs is None else CalibrationPlan(cs, ids)


def calibration_hook(cplan: CalibrationPlan | None, recipe: Any, progress: Any):
    """What export.quantize_artifacts calls for a static recipe (None for the others)."""
    if not recipe.needs_calibration or cplan is None:
        return None
    n = len(cplan.ids)

    def hook(model_path: str, qt: Any) -> dict[str, Any]:
        progress.note(f"calibrating {recipe.name} on {cplan.set.name}: {n} prompts through prefill/decode")
        done = [0]

        def tick(k: int) -> None:
            done[0] += k
            if done[0] in (n // 2, n) or n <= 4:
                progress.note(f"calibrated {done[0]}/{n} prompts")

        return calibrator_for(cplan.ids, tick)(model_path, qt)

    return hook


def recipe_manifest(recipe: Any, cplan: CalibrationPlan | None, model: Path) -> dict[str, Any]:
    """The manifest's recipe fields beyond name/description/bits: group, activations, source, the
    calibration set's hash (static recipes) and the CPU model's op census."""
    from converters import census as census_lib

    out: dict[str, Any] = {"group": recipe.group, "activation_bits": recipe.activation_bits,
                           "source": recipe.source}
    if recipe.sha256:
        out["file_sha256"] = recipe.sha256
    out["calibration"] = cplan.set.manifest_entry() if recipe.needs_calibration and cplan else None
    try:
        out["census"] = census_lib.summary(census_lib.census(model))
    except Exception as e:  # noqa: BLE001 - a census is informative; never fail a bundle over it
        out["census"] = {"error": f"{type(e).__name__}: {e}"[:200]}
    return out
