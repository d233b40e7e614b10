"""Engines for the agent loop and for constrained JSON: the host's LiteRT-LM CPU engine, and any
runner that speaks the device-side runner contract (a phone or the reference emulator).

Both are ``TextEngine`` (``generate``) and ``constrained.Scorer`` (``continue_text`` / ``choose``).
The host engine scores options with LiteRT-LM's ``Session.run_text_scoring``; the runner contract
has no scoring, so a device engine's ``choose`` answers None and constrained decoding falls back
to the schema's first allowed option where the model's draft is not allowed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from gemma4_common.errors import UserError

from gemma4_common.gemma4_format import BOS, STOP_SEQUENCES, cut_at_stop

__all__ = ["HostTextEngine", "RunnerTextEngine"]


class HostTextEngine:
    """The agent's engine over ``on_device.engine.HostEngine`` (greedy, raw prompts).

    LiteRT-LM adds the BOS token itself, so a leading ``<bos>`` in a rendered prompt is dropped.
    """

    def __init__(self, engine: Any, *, owns: bool = False, seed: int | None = None) -> None:
        self.engine = engine
        self._owns = owns
        self.seed = seed
        self.generations = 0
        self.scorings = 0
        self.last: Any = None  # the last generation (text and stats)

    @classmethod
    def open(cls, model_path: Path | str, *, threads: int | None = None, max_num_tokens: int | None = None,
             seed: int | None = None) -> "HostTextEngine":
        from on_device.engine import HostEngine

        return cls(HostEngine(model_path, threads=threads, max_num_tokens=max_num_tokens), owns=True, seed=seed)

    def close(self) -> None:
        if self._owns:
            self.engine.close()

    def __enter__(self) -> "HostTextEngine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @staticmethod
    def _raw(prompt: str) -> str:
        return prompt[len(BOS):] if prompt.startswith(BOS) else prompt

    # TextEngine
    def generate(self, prompt: str, max_new_tokens: int, stop: list[str]) -> str:
        self.generations += 1
        self.last = self.engine.generate(self._raw(prompt), max_new_tokens=max_new_tokens, stop=stop, seed=self.seed)
        return self.last.text

    # Scorer
    def continue_text(self, text: str, max_new_tokens: int, stop: list[str]) -> str:
        return cut_at_stop(self.generate(text, max_new_tokens, stop), stop, keep=False)[0]

    def choose(self, text: str, options: list[str]) -> int | None:
        """The option with the highest log-likelihood after ``text`` (sum over its tokens)."""
        prefix = self._raw(text)
        best, best_score = 0, float("-inf")
        for k, option in enumerate(options):
            self.scorings += 1
            scores = self.engine.score(prefix, option)
            total = sum(scores) if scores else float("-inf")
            if total > best_score:
                best, best_score = k, total
        return best


class RunnerTextEngine:
    """The agent's engine on a device: each generation is one run of the device-side runner
    (``litert_lm_main`` contract) with the rendered prompt and ``--apply_prompt_template=false``.

    ``run`` is ``sdk_tools.bench.run_runner``-shaped: ``run(invocation) -> RunnerResult``; the
    runner has no stop sequences, so the response is cut at the first one here.
    """

    def __init__(self, run: Callable[[Any], Any], model_path: str, *, backend: str = "cpu",
                 max_num_tokens: int | None = None, num_threads: int | None = None,
                 dispatch_lib_dir: str | None = None, seed: int | None = None) -> None:
        self._run = run
        self.seed = seed
        self.deployment: Any = None  # where the bundle is on the device, when opened by sdk_tools.engines
        self.model_path = model_path
        self.backend = backend
        self.dispatch_lib_dir = dispatch_lib_dir
        self.max_num_tokens = max_num_tokens
        self.num_threads = num_threads
        self.generations = 0

    def invocation(self, prompt: str, max_new_tokens: int):
        from on_device.runner_contract import RunnerInvocation

        return RunnerInvocation(model_path=self.model_path, backend=self.backend,
                                input_prompt=prompt[len(BOS):] if prompt.startswith(BOS) else prompt,
                                report_peak_memory=False, max_num_tokens=self.max_num_tokens,
                                num_threads=self.num_threads, apply_prompt_template=False,
                                dispatch_lib_dir=self.dispatch_lib_dir if self.backend == "npu" else None,
                                max_output_tokens=max_new_tokens, seed=self.seed)

    def generate(self, prompt: str, max_new_tokens: int, stop: list[str]) -> str:
        self.generations += 1
        result = self._run(self.invocation(prompt, max_new_tokens))
        if result.response is None:
            raise UserError("the device runner printed no response", "check the runner with `gemma4-mobile bench`")
        return cut_at_stop(result.response, stop or STOP_SEQUENCES, keep=True)[0]

    def continue_text(self, text: str, max_new_tokens: int, stop: list[str]) -> str:
        return cut_at_stop(self.generate(text, max_new_tokens, stop), stop, keep=False)[0]

    def choose(self, text: str, options: list[str]) -> int | None:
        return None  # the runner contract has no scoring
