"""Accuracy metrics of a bundle against its reference: per-token log-prob deltas, perplexities
and their ratio, KL divergence where both sides give full distributions, and greedy agreement
(exact-match rate, first-divergence token position)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from gemma4_common.stats import percentile


def perplexity(logprobs: Sequence[float]) -> float:
    """exp(-mean log-prob) over the tokens given (nan when there are none)."""
    if not logprobs:
        return float("nan")
    return math.exp(-sum(logprobs) / len(logprobs))


def kl_divergence(ref_log_dist: Any, other_log_dist: Any) -> list[float]:
    """KL(ref || other) per position, from two [positions x vocab] tensors of log-probs."""
    import torch

    p = torch.as_tensor(ref_log_dist, dtype=torch.float64)
    q = torch.as_tensor(other_log_dist, dtype=torch.float64)
    return [float(x) for x in (p.exp() * (p - q)).sum(dim=-1)]


def first_divergence(a: Sequence[Any], b: Sequence[Any]) -> int | None:
    """Index of the first position where two token sequences differ (None when equal)."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


@dataclass
class ItemResult:
    """One evaluation item: both sides' target log-probs and greedy continuations."""

    index: int
    kind: str
    ref_logprobs: list[float]
    bundle_logprobs: list[float] | None  # None when not aligned (the tokenizations differ)
    bundle_own_logprobs: list[float]  # what the bundle gave on its own tokens (for its perplexity)
    tokens_match: bool
    ref_text: str | None = None
    bundle_text: str | None = None
    divergence: int | None = None  # first differing token of the continuations; None when equal
    kl: list[float] | None = None  # per token, where both distributions exist

    @property
    def deltas(self) -> list[float]:
        if self.bundle_logprobs is None:
            return []
        return [abs(a - b) for a, b in zip(self.ref_logprobs, self.bundle_logprobs)]

    @property
    def greedy_match(self) -> bool | None:
        if self.ref_text is None or self.bundle_text is None:
            return None
        return self.ref_text == self.bundle_text

    def to_dict(self) -> dict[str, Any]:
        d = self.deltas
        return {"index": self.index, "kind": self.kind, "tokens_match": self.tokens_match,
                "target_tokens": len(self.ref_logprobs),
                "mean_logprob_delta": sum(d) / len(d) if d else None, "max_logprob_delta": max(d) if d else None,
                "ref_ppl": perplexity(self.ref_logprobs), "bundle_ppl": perplexity(self.bundle_own_logprobs),
                "greedy_match": self.greedy_match, "first_divergence": self.divergence,
                "ref_text": self.ref_text, "bundle_text": self.bundle_text,
                "mean_kl": (sum(self.kl) / len(self.kl)) if self.kl else None}


@dataclass
class Summary:
    items: int
    scored_tokens: int
    tokenizer_mismatches: int
    mean_logprob_delta: float
    p99_logprob_delta: float
    max_logprob_delta: float
    ref_ppl: float
    bundle_ppl: float
    ppl_ratio: float
    kl_mean: float | None
    greedy_agreement: float | None
    greedy_items: int
    mean_first_divergence: float | None  # over the items whose continuations differ
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in self.__dict__.items()}


def summarize(results: Sequence[ItemResult]) -> Summary:
    """Pool the items: deltas over every aligned target token; perplexity of each side over
    its own target tokens (so a bundle with another tokenizer still gets one)."""
    deltas = [d for r in results for d in r.deltas]
    ref_lps = [x for r in results for x in r.ref_logprobs]
    own_lps = [x for r in results for x in r.bundle_own_logprobs]
    ref_ppl, bundle_ppl = perplexity(ref_lps), perplexity(own_lps)
    kls = [k for r in results if r.kl for k in r.kl]
    greedy = [r for r in results if r.greedy_match is not None]
    diverged = [r.divergence for r in greedy if r.divergence is not None]
    return Summary(
        items=len(results), scored_tokens=len(deltas),
        tokenizer_mismatches=sum(1 for r in results if not r.tokens_match),
        mean_logprob_delta=sum(deltas) / len(deltas) if deltas else float("nan"),
        p99_logprob_delta=percentile(deltas, 99), max_logprob_delta=max(deltas) if deltas else float("nan"),
        ref_ppl=ref_ppl, bundle_ppl=bundle_ppl,
        ppl_ratio=bundle_ppl / ref_ppl if ref_ppl and not math.isnan(ref_ppl) else float("nan"),
        kl_mean=sum(kls) / len(kls) if kls else None,
        greedy_agreement=(sum(1 for r in greedy if r.greedy_match) / len(greedy)) if greedy else None,
        greedy_items=len(greedy),
        mean_first_divergence=(sum(diverged) / len(diverged)) if diverged else None,
    )


@dataclass
class Agreement:
    """Greedy outputs of one side against another, prompt by prompt."""

    matches: int
    total: int
    per_prompt: list[dict[str, Any]]

    @property
    def rate(self) -> float:
        return self.matches / self.total if self.total else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {"rate": self.rate, "matches": self.matches, "total": self.total, "per_prompt": self.per_prompt}


def agreement(a: Sequence[str], b: Sequence[str], tokenize: Callable[[str], list[int]],
              labels: tuple[str, str] = ("a", "b")) -> Agreement:
    """Exact-match rate of two lists of (normalized) continuations and, per prompt, the token
    position where they first differ."""
    rows = []
    matches = 0
    for i, (x, y) in enumerate(zip(a, b)):
        same = x == y
        matches += same
        div = None if same else first_divergence(tokenize(x), tokenize(y))
        rows.append({"index": i, "match": same, "first_divergence": div, labels[0]: x, labels[1]: y})
    return Agreement(matches, len(rows), rows)
