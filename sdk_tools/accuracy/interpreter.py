"""Accuracy of bundles LiteRT-LM 0.18.1's CPU engine cannot run (static int8/int16 activations with
quantized KV-cache I/O, split-cache NPU variants): the LiteRT interpreter on their prefill/decode
signatures, compared with PyTorch under the same metrics and gates `verify` uses.

Two engines with the interface verify's bundle side needs (tokenize, score_text, generate):
`SignatureEngine` drives a regular export's prefill_<N>/decode (tokens, input_pos, mask, kv_cache_*);
`SplitCacheEngine` drives a split-cache NPU variant through litert-torch's sampling executor
(embedder, aux mask/rope/cache-update and prefill/decode models)."""

from __future__ import annotations

import contextlib
import io
import math
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from gemma4_common.errors import UserError
from gemma4_common.progress import Progress


@dataclass
class _Generation:
    text: str


def _log_softmax(logits) -> Any:
    import numpy as np

    x = np.asarray(logits, dtype=np.float64)
    m = x.max()
    return x - (m + math.log(np.exp(x - m).sum()))


def _extract_section(litertlm: Path, section: str, out: Path) -> Path:
    from converters.bundle import litertlm_sections

    for s in litertlm_sections(litertlm)["sections"]:
        if s.get("model_type") == section:
            with open(litertlm, "rb") as f:
                f.seek(s["begin"])
                out.write_bytes(f.read(s["end"] - s["begin"]))
            return out
    raise UserError(f"{litertlm} has no {section} section", "pass a bundle made by `gemma4-mobile convert`")


class _Base:
    def __init__(self, tokenizer, eos_ids: set[int]):
        self.tok = tokenizer
        self.eos_ids = set(eos_ids)
        self._tmp = Path(tempfile.mkdtemp(prefix=".g4m-interp-"))

    def close(self) -> None:
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def tokenize(self, text: str) -> list[int]:
        return list(self.tok(text, add_special_tokens=False)["input_ids"])

    def _bos(self) -> list[int]:
        return [self.tok.bos_token_id] if self.tok.bos_token_id is not None else []

    def generate(self, prompt: str, max_new_tokens: int = 32, stop: Sequence[str] = (), seed: int | None = None):
        """Greedy continuation after BOS + prompt: EOS tokens end it (not part of the text), a stop
        sequence ends it after the sequence (as the host engine and the PyTorch reference do)."""
        from gemma4_common.gemma4_format import cut_at_stop

        out: list[int] = []
        text = ""
        for nxt in self._greedy(self._bos() + self.tokenize(prompt), max_new_tokens):
            if nxt in self.eos_ids:
                break
            out.append(nxt)
            text = self.tok.decode(out, skip_special_tokens=False)
            text, hit = cut_at_stop(text, stop, keep=True)
            if hit is not None:
                break
        return _Generation(text)


class SignatureEngine(_Base):
    """A regular (non-split) export's prefill/decode signatures, quantized I/O handled."""

    def __init__(self, model: Path | str, tokenizer, eos_ids: set[int]):
        super().__init__(tokenizer, eos_ids)
        from converters.calibration import SignatureFeeder

        model = Path(model)
        if model.suffix == ".litertlm":
            model = _extract_section(model, "tf_lite_prefill_decode", self._tmp / "prefill_decode.tflite")
        self.feeder = SignatureFeeder(model, quantized_io=True)

    def score_text(self, text: str) -> list[float]:
        """log p(token_i | tokens before it) for every token after the first, teacher-forced through decode."""
        ids = self.tokenize(text)
        kv = self.feeder.zero_cache()
        out = []
        for pos, (cur, nxt) in enumerate(zip(ids, ids[1:])):
            logits, kv = self.feeder.decode(cur, pos, kv)
            out.append(float(_log_softmax(logits)[nxt]))
        return out

    def _greedy(self, ids: list[int], n: int):
        import numpy as np

        kv, pos = self.feeder.prefill(ids[:-1])
        tok = ids[-1]
        for _ in range(n):
            if pos >= self.feeder.cache:
                return
            logits, kv = self.feeder.decode(tok, pos, kv)
            tok = int(np.argmax(logits))
            pos += 1
            yield tok


class _QuantDequant:
    def __init__(self, runner):
        self._r = runner

    def get_input_details(self):
        return self._r.get_input_details()

    def get_output_details(self):
        return self._r.get_output_details()

    def __call__(self, **kw):
        from litert_torch.generative.export_hf.experimental.calib import sampling_executor

        return sampling_executor.try_run_signature_with_quant_dequant(kw, self._r)


class SplitCacheEngine(_Base):
    """A split-cache NPU variant (.litertlm with embedder, aux and prefill/decode sections) through
    litert-torch's sampling executor in inference mode (quantize/dequantize at its signatures)."""

    def __init__(self, model: Path | str, tokenizer, eos_ids: set[int], cache_length: int):
        super().__init__(tokenizer, eos_ids)
        from litert_torch.generative.export_hf.experimental.calib import loader, sampling_executor

        saved = tempfile.tempdir
        tempfile.tempdir = str(self._tmp)  # the loader unpacks into mkdtemp() and never cleans up
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                cfg = loader.load_models(max_kv_cache_size=cache_length, model_path=(None, None),
                                         embedder_model_path=None, spm_path=None, transformers_model_path=None,
                                         input_litertlm=str(model))
                self.ex = sampling_executor.Executor(cfg, stream_output=False)
        finally:
            tempfile.tempdir = saved
        self.cache = cache_length
        # The executor calls the aux mask/rope runners directly; in the quantized variant they
        # return int16 tensors the prefill/decode graph takes as float: dequantize at their outputs.
        ex = self.ex
        ex.prefill_mask_runners = {k: _QuantDequant(v) for k, v in ex.prefill_mask_runners.items()}
        ex.prefill_rope_runners = {k: _QuantDequant(v) for k, v in ex.prefill_rope_runners.items()}
        ex.decode_mask_runner = _QuantDequant(ex.decode_mask_runner)
        ex.decode_rope_runner = _QuantDequant(ex.decode_rope_runner)

    def _prefilled(self, ids: list[int]):
        import dataclasses

        import numpy as np

        ex = self.ex
        st = ex.init_decode_state(self.tok.bos_token or "a")
        st = dataclasses.replace(st, token_ids=np.asarray([ids], dtype=np.int32), num_input_tokens=len(ids))
        with contextlib.redirect_stdout(io.StringIO()):
            st = ex.prefill_embeds(st)
            while not st.generate:
                st = ex.prefill_chunk(st)
        return st

    def score_text(self, text: str) -> list[float]:
        import numpy as np

        ids = self.tokenize(text)
        # After a prefill of ids[:1] the executor re-feeds ids[0]; each decode step's logits then
        # predict the override token that follows.
        st = self._prefilled(ids[:1])
        out = []
        with contextlib.redirect_stdout(io.StringIO()):
            for t in ids[1:]:
                st = self.ex.decode_step(st, np.asarray([[t]], dtype=np.int32))
                out.append(float(_log_softmax(st.logits[0, -1])[t]))
        return out

    def _greedy(self, ids: list[int], n: int):
        st = self._prefilled(ids)
        with contextlib.redirect_stdout(io.StringIO()):
            for _ in range(n):
                if int(st.time_step) >= self.cache - 1:
                    return
                st = self.ex.decode_step(st)
                yield int(st.next_decode_token[0, 0])


def engine_for(model: Path, tokenizer, eos_ids: set[int], cache_length: int):
    """The engine a model needs: split-cache (has an aux section) or plain signatures."""
    from converters.bundle import litertlm_sections

    types = {s.get("model_type") for s in litertlm_sections(model)["sections"]}
    if "tf_lite_aux" in types:
        return SplitCacheEngine(model, tokenizer, eos_ids, cache_length)
    return SignatureEngine(model, tokenizer, eos_ids)


def verify_interpreter(model: Path | str, checkpoint: Path | str, items: Sequence[Any], *, recipe: str,
                       cache_length: int, settings: Any = None, reference: Any = None,
                       progress: Progress | None = None) -> dict[str, Any]:
    """`model` (a .litertlm) vs PyTorch on `items` with verify's metrics and the gates of `recipe`'s class."""
    from sdk_tools.accuracy import gates as gates_lib
    from sdk_tools.accuracy import metrics
    from sdk_tools.accuracy.verify import REPORT_FORMAT, VerifySettings, _bundle_side, load_reference, reference_run

    settings = settings or VerifySettings()
    settings.validate()
    progress = progress or Progress()
    model, checkpoint = Path(model), Path(checkpoint)
    cls, g = gates_lib.gates_for(recipe)
    if reference is None or reference.reference is None:
        with progress.step("load PyTorch checkpoint"):
            ref = load_reference(checkpoint)
        reference = reference_run(ref, items, settings, progress=progress)
    rr = reference
    longest = max(len(r.ids) for r in rr.results) + settings.max_new_tokens
    if longest > cache_length:
        raise UserError(f"an evaluation item needs {longest} tokens, more than the model's cache ({cache_length})",
                        "use shorter prompts/targets or --max-new-tokens, or convert with a longer --cache-length")
    t0 = time.perf_counter()
    with engine_for(model, rr.reference.tokenizer, rr.reference.eos_ids, cache_length) as eng:
        results = _bundle_side(eng, rr.items, rr, settings, progress)
    summary = metrics.summarize(results).to_dict()
    summary["notes"] = ["LiteRT interpreter on the prefill/decode signatures (LiteRT-LM's CPU engine does not "
                        "run this model)"]
    checks = gates_lib.check_host(summary, g)
    return {"format": REPORT_FORMAT, "mode": "interpreter", "model": str(model), "recipe": recipe,
            "checkpoint": str(checkpoint), "eval": {"items": len(results)}, "settings": asdict(settings),
            "recipe_class": cls, "gates": asdict(g), "summary": summary,
            "gate_results": [asdict(c) for c in checks], "passed": all(c.passed for c in checks),
            "seconds": time.perf_counter() - t0, "items": [r.to_dict() for r in results]}
