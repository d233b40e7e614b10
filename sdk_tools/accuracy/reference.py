"""The PyTorch reference: per-token log-probs, full next-token distributions and greedy
continuations of a Hugging Face Gemma 4 checkpoint, on the same tokens the bundle sees."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from gemma4_common.errors import UserError


@dataclass
class RefScore:
    target_ids: list[int]
    logprobs: list[float]  # log p(target token | everything before it)
    log_dists: "object"  # torch tensor [len(target), vocab] of log-probs (for KL)


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

    def encode(self, text: str, add_bos: bool) -> list[int]:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return ([self.tokenizer.bos_token_id] if add_bos else []) + ids

    def score(self, prefix: str, target: str) -> RefScore:
        """Log-probs of target's tokens after BOS + prefix (the sequence LiteRT-LM scores)."""
        torch = self._torch
        pre = self.encode(prefix, add_bos=True)
        tgt = self.tokenizer(target, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([pre + tgt])
        with torch.no_grad():
            logits = self.model(input_ids=ids).logits[0].float()
        logp = torch.log_softmax(logits, dim=-1)
        rows = logp[len(pre) - 1 : len(pre) - 1 + len(tgt)]
        lps = [float(rows[i, t]) for i, t in enumerate(tgt)]
        return RefScore(target_ids=tgt, logprobs=lps, log_dists=rows)

    def greedy(self, prompt: str, max_new_tokens: int, stop: Sequence[str] = ()) -> str:
        torch = self._torch
        ids = self.encode(prompt, add_bos=True)
        out: list[int] = []
        text = ""
        with torch.no_grad():
            past = None
            inp = torch.tensor([ids])
            for _ in range(max_new_tokens):
                res = self.model(input_ids=inp, past_key_values=past, use_cache=True)
                past = res.past_key_values
                nxt = int(res.logits[0, -1].argmax())
                out.append(nxt)
                text = self.tokenizer.decode(out, skip_special_tokens=False)
                if any(s in text for s in stop):
                    break
                inp = torch.tensor([[nxt]])
        for s in stop:
            i = text.find(s)
            if i >= 0:
                text = text[: i + len(s)]
        return text
