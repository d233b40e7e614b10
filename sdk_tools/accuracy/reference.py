"""The PyTorch reference: per-token log-probs, full next-token distributions and greedy
continuations of a Hugging Face Gemma 4 checkpoint, on the same tokens the bundle sees."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from gemma4_common.errors import UserError
from gemma4_common.gemma4_format import cut_at_stop

SMALL_MODEL_PARAMS = 50_000_000


@dataclass
class RefScore:
    target_ids: list[int]
    logprobs: list[float]  # log p(target token | everything before it)
    log_dists: "object"  # torch tensor [len(target), vocab] of log-probs (for KL)
    ids: list[int] | None = None  # the whole scored sequence (BOS + prefix + target tokens)


class TorchReference:
    def __init__(self, checkpoint: Path | str):
        import torch
        from transformers import AutoTokenizer, Gemma4ForCausalLM

        checkpoint = Path(checkpoint)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(checkpoint)
            self.model = Gemma4ForCausalLM.from_pretrained(checkpoint, dtype=torch.float32)
        except (OSError, ValueError) as e:
            raise UserError(f"cannot load the reference checkpoint {checkpoint} ({str(e).splitlines()[0]})",
                            "pass the Hugging Face checkpoint the bundle was converted from") from None
        self.model.eval()
        self._torch = torch
        self.checkpoint = checkpoint
        eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        if eos is None:
            eos = self.tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, (list, tuple)) else [eos]) - {None}
        # Small models run fastest on one thread, and far faster than on several when the cores
        # are busy (OpenMP workers spin); big ones keep torch's default.
        n_params = sum(p.numel() for p in self.model.parameters())
        self._threads = 1 if n_params < SMALL_MODEL_PARAMS else None

    @contextlib.contextmanager
    def _threads_ctx(self):
        torch = self._torch
        if self._threads is None:
            yield
            return
        before = torch.get_num_threads()
        torch.set_num_threads(self._threads)
        try:
            yield
        finally:
            torch.set_num_threads(before)

    @property
    def bos_token_id(self) -> int | None:
        return self.tokenizer.bos_token_id

    def encode(self, text: str, add_bos: bool) -> list[int]:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return ([self.tokenizer.bos_token_id] if add_bos else []) + ids

    def split_ids(self, prefix: str, target: str, add_bos: bool = True) -> tuple[list[int], int]:
        """Token ids of (BOS +) prefix + target tokenized as one text (as the bundle's engine sees
        it) and how many of the last ids are the target's (a token crossing the boundary counts
        as the target's)."""
        enc = self.tokenizer(prefix + target, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = list(enc["input_ids"]), enc["offset_mapping"]
        n_target = sum(1 for (_, end) in offsets if end > len(prefix))
        bos = [self.tokenizer.bos_token_id] if add_bos and self.tokenizer.bos_token_id is not None else []
        return bos + ids, n_target

    def score(self, prefix: str, target: str, add_bos: bool = True) -> RefScore:
        """Log-probs of target's tokens after BOS + prefix (the sequence LiteRT-LM scores when it
        is given `<bos>` + prefix + target in one run_text_scoring call; see accuracy.verify)."""
        torch = self._torch
        ids, n = self.split_ids(prefix, target, add_bos)
        tgt = ids[len(ids) - n:]
        if n == 0 or len(ids) - n < 1:
            raise UserError(f"cannot score target {target[:40]!r}: it has no tokens or nothing precedes it",
                            "give every evaluation item a non-empty prompt and target")
        with torch.no_grad(), self._threads_ctx():
            logits = self.model(input_ids=torch.tensor([ids])).logits[0].float()
        logp = torch.log_softmax(logits, dim=-1)
        start = len(ids) - n
        rows = logp[start - 1 : start - 1 + n]
        lps = [float(rows[i, t]) for i, t in enumerate(tgt)]
        return RefScore(target_ids=tgt, logprobs=lps, log_dists=rows, ids=ids)

    def greedy(self, prompt: str, max_new_tokens: int, stop: Sequence[str] = ()) -> str:
        """Greedy continuation after BOS + prompt (LiteRT-LM's run_prefill adds the BOS itself).
        Stops at the model's EOS tokens, which are not part of the text (as in LiteRT-LM), or
        after the first stop sequence, which is."""
        torch = self._torch
        ids = self.encode(prompt, add_bos=True)
        out: list[int] = []
        text = ""
        with torch.no_grad(), self._threads_ctx():
            past = None
            inp = torch.tensor([ids])
            for _ in range(max_new_tokens):
                res = self.model(input_ids=inp, past_key_values=past, use_cache=True)
                past = res.past_key_values
                nxt = int(res.logits[0, -1].argmax())
                if nxt in self.eos_ids:
                    break
                out.append(nxt)
                text = self.tokenizer.decode(out, skip_special_tokens=False)
                text, hit = cut_at_stop(text, stop, keep=True)
                if hit is not None:
                    break
                inp = torch.tensor([[nxt]])
        return text
