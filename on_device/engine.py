"""The host's LiteRT-LM CPU engine behind one small interface: greedy generation with stop
sequences, per-token scoring of a continuation, and the engine's own benchmark figures.
Used by the emulator's runner, `gemma4-mobile run`, verification and the agent loop."""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from gemma4_common.config import env_flag
from gemma4_common.errors import UserError
from gemma4_common.gemma4_format import cut_at_stop


# LiteRT-LM's cache_dir value that turns its weight cache off. With the default (None) the engine
# writes `<model>_<mtime>_<size>.xnnpack_cache` next to the model, following symlinks: into the
# user's bundle directory for `run`, next to a device file for the emulator's runner.
NO_CACHE = ":nocache"


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[list[str]]:
    """Capture what LiteRT-LM's native code writes to fd 2 (absl INFO/WARNING/ERROR lines) while
    the block runs; the lines are yielded for the caller's error, and echoed only when
    $GEMMA4_MOBILE_VERBOSE is set (as --verbose sets it)."""
    import sys
    import tempfile

    lines: list[str] = []
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:
        yield lines
        return
    with tempfile.TemporaryFile() as cap:
        os.dup2(cap.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            cap.seek(0)
            text = cap.read().decode("utf-8", "replace")
            lines[:] = [ln for ln in text.splitlines() if ln.strip()]
            if text and env_flag("VERBOSE"):
                os.write(2, text.encode())


def native_reason(lines: Sequence[str]) -> str | None:
    """The engine's own reason from its captured log, e.g. `UNIMPLEMENTED: ... version 4294967295`."""
    for line in reversed(lines):
        _, sep, rest = line.partition("Failed to create engine: ")
        if sep and rest.strip():
            return " ".join(rest.split())[:200]
    return None


def _lm():
    import litert_lm

    with contextlib.suppress(Exception):
        litert_lm.set_min_log_severity(litert_lm.LogSeverity.ERROR)
    return litert_lm


@dataclass
class GenerationStats:
    init_s: float
    ttft_s: float
    prefill_tokens: int
    prefill_tps: float
    decode_tokens: int
    decode_tps: float


@dataclass
class Generation:
    text: str
    stopped_by: str | None  # the stop sequence that ended it, or None (token budget / engine EOS)
    stats: GenerationStats


class HostEngine:
    """One loaded `.litertlm` model on the host CPU."""

    def __init__(self, model_path: Path | str, *, threads: int | None = None, max_num_tokens: int | None = None,
                 ring_buffers: bool | None = None, vision: bool = False, audio: bool = False,
                 cache_dir: str | None = NO_CACHE):
        model_path = Path(model_path)
        if not model_path.is_file():
            raise UserError(f"model file {model_path} does not exist", "pass a bundle made by `gemma4-mobile convert`")
        lm = _lm()
        self.model_path = model_path
        self.max_num_tokens = max_num_tokens
        t0 = time.perf_counter()
        try:
            backend = lm.Backend.CPU(thread_count=threads) if threads else lm.Backend.CPU()
        except TypeError:
            backend = lm.Backend.CPU()
        extra = {}
        if ring_buffers is not None:  # sliding-window layers exported with ring-buffer KV caches
            extra["use_ringbuffers_local_attention"] = ring_buffers
        if vision:  # the bundle's vision encoder runs on the CPU too
            extra.update(vision_backend=lm.Backend.CPU(), max_num_images=1)
        if audio:
            extra["audio_backend"] = lm.Backend.CPU()
        native: list[str] = []
        try:
            with quiet_native_stderr() as native:
                self._engine = lm.Engine(str(model_path), backend=backend, max_num_tokens=max_num_tokens,
                                         enable_benchmark=True, cache_dir=cache_dir, **extra)
        except RuntimeError as e:
            raise UserError(f"LiteRT-LM could not load {model_path} ({native_reason(native) or e})",
                            "re-run `gemma4-mobile convert`; check the bundle with `gemma4-mobile inspect`") from None
        self.init_s = time.perf_counter() - t0

    def close(self) -> None:
        self._engine.close()

    def __enter__(self) -> "HostEngine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def tokenize(self, text: str) -> list[int]:
        return list(self._engine.tokenize(text))

    def check_prompt(self, prompt: str, what: str = "the prompt") -> None:
        """Refuse what LiteRT-LM would fail on mid-prefill with a bare error: text that is not valid
        UTF-8, or a prompt that leaves no room in the KV cache (BOS + prompt + one new token)."""
        from gemma4_common.validate import text

        text(prompt, what)
        if self.max_num_tokens:
            n = len(self.tokenize(prompt))
            if n + 2 > self.max_num_tokens:
                raise UserError(f"{what} is {n} tokens, more than the context of {self.max_num_tokens} holds "
                                "(with BOS and one new token)",
                                "shorten it, or use a longer context (--context up to the bundle's cache, "
                                "or convert with a longer --cache-length)")

    def _session(self, max_output_tokens: int | None = None, seed: int | None = None):
        lm = _lm()
        sampler = lm.SamplerConfig(top_k=1, temperature=0.0, seed=seed if seed is not None else 0)
        return self._engine.create_session(apply_prompt_template=False, sampler_config=sampler,
                                           max_output_tokens=max_output_tokens)

    def generate(self, prompt: str, max_new_tokens: int = 64, stop: Sequence[str] = (),
                 seed: int | None = None) -> Generation:
        """Greedy continuation of `prompt` (the prompt is taken as is: no template is applied)."""
        self.check_prompt(prompt)
        t0 = time.perf_counter()
        sess = self._session(max_output_tokens=max_new_tokens, seed=seed)
        try:
            sess.run_prefill([prompt])
            text = ""
            stopped = None
            for chunk in _decode_stream(sess):
                text += chunk
                cut, hit = cut_at_stop(text, stop, keep=True)
                if hit is not None:
                    text, stopped = cut, hit
                    with contextlib.suppress(Exception):
                        sess.cancel_process()
                    break
            info = sess.get_benchmark_info()
        finally:
            sess.close()
        stats = GenerationStats(
            init_s=self.init_s, ttft_s=info.time_to_first_token_in_second or (time.perf_counter() - t0),
            prefill_tokens=info.last_prefill_token_count, prefill_tps=info.last_prefill_tokens_per_second,
            decode_tokens=info.last_decode_token_count, decode_tps=info.last_decode_tokens_per_second)
        return Generation(text=text, stopped_by=stopped, stats=stats)

    def chat(self, text: str, *, images: Sequence[Path] = (), audios: Sequence[Path] = (),
             max_new_tokens: int = 64, system: str | None = None) -> Generation:
        """One user turn through LiteRT-LM's conversation API (the bundle's chat template and its
        Gemma 4 data processor, which runs the vision/audio encoders): greedy, images and audio
        clips first, then the text."""
        from gemma4_common.validate import text as check_text

        check_text(text, "the prompt")
        if system is not None:
            check_text(system, "the system instruction")
        lm = _lm()
        content = ([{"type": "image", "path": str(Path(p).resolve())} for p in images]
                   + [{"type": "audio", "path": str(Path(p).resolve())} for p in audios]
                   + [{"type": "text", "text": text}])
        t0 = time.perf_counter()
        conv = self._engine.create_conversation(sampler_config=lm.SamplerConfig(top_k=1, temperature=0.0, seed=0),
                                                max_output_tokens=max_new_tokens, system_message=system)
        try:
            reply = conv.send_message({"role": "user", "content": content})
            info = conv.get_benchmark_info()
        finally:
            conv.close()
        body = reply.get("content", "") if isinstance(reply, dict) else ""
        out = body if isinstance(body, str) else "".join(
            c.get("text", "") for c in body if isinstance(c, dict) and c.get("type") == "text")
        stats = GenerationStats(
            init_s=self.init_s, ttft_s=info.time_to_first_token_in_second or (time.perf_counter() - t0),
            prefill_tokens=info.last_prefill_token_count, prefill_tps=info.last_prefill_tokens_per_second,
            decode_tokens=info.last_decode_token_count, decode_tps=info.last_decode_tokens_per_second)
        return Generation(text=out, stopped_by=None, stats=stats)

    def score(self, prefix: str, target: str) -> list[float]:
        """Per-token log-probabilities of `target` after BOS + `prefix` (LiteRT-LM run_text_scoring).

        Measured here: `run_prefill` adds the model's BOS itself but `run_text_scoring` does not, and
        scoring after a prefill lines up with no single token sequence. So the whole sequence
        `<bos>` + prefix + target is scored in one call and the target's (last) scores are returned.
        """
        bos = self.bos_text()
        full = bos + prefix + target
        n_target = len(self.tokenize(full)) - len(self.tokenize(bos + prefix))
        if n_target <= 0:
            return []
        return self.score_text(full)[-n_target:]

    def score_text(self, text: str) -> list[float]:
        """run_text_scoring of `text` exactly as given (no BOS added): one log-prob per token."""
        sess = self._session()
        try:
            r = sess.run_text_scoring([text], store_token_lengths=True)
        finally:
            sess.close()
        return list(r.token_scores[0]) if r.token_scores else []

    def bos_text(self) -> str:
        bos = self._engine.bos_token_id
        return self._engine.detokenize([bos]) if bos is not None else ""


def _decode_stream(sess) -> Iterator[str]:
    for resp in sess.run_decode_async():
        for t in resp.texts:
            yield t


def benchmark(model_path: Path | str, prefill_tokens: int, decode_tokens: int, threads: int | None = None,
              max_num_tokens: int | None = None, cache_dir: str | None = NO_CACHE) -> GenerationStats:
    """LiteRT-LM's own benchmark (synthetic prompt of `prefill_tokens`, `decode_tokens` decoded)."""
    lm = _lm()
    try:
        backend = lm.Backend.CPU(thread_count=threads) if threads else lm.Backend.CPU()
    except TypeError:
        backend = lm.Backend.CPU()
    kw = {}
    if max_num_tokens is None:
        max_num_tokens = prefill_tokens + decode_tokens + 8
    bench = lm.Benchmark(model_path=str(model_path), backend=backend, prefill_tokens=prefill_tokens,
                         decode_tokens=decode_tokens, max_num_tokens=max_num_tokens, cache_dir=cache_dir, **kw)
    with quiet_native_stderr():
        info = bench.run()
    return GenerationStats(init_s=info.init_time_in_second, ttft_s=info.time_to_first_token_in_second,
                           prefill_tokens=info.last_prefill_token_count,
                           prefill_tps=info.last_prefill_tokens_per_second,
                           decode_tokens=info.last_decode_token_count,
                           decode_tps=info.last_decode_tokens_per_second)


def peak_rss_mb() -> float:
    """Peak resident memory of this process (VmHWM), in MB."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{os.getpid()}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
