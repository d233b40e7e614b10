"""Build and train tiny Gemma 4 checkpoints (real `Gemma4ForCausalLM` architecture: per-layer
embeddings, sliding + full attention, KV-shared layers, double-wide MLP where E2B has it) with a
small byte-level BPE tokenizer carrying the Gemma 4 special tokens. Cached by content hash."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from gemma4_common.config import state_dir
from gemma4_common.errors import UserError
from gemma4_common.fsutil import atomic_dir
from gemma4_common.gemma4_format import SPECIAL_TOKENS
from sdk_tools.tinymodels import corpus

BUILD_VERSION = 3  # bump when the code below changes what it produces

# The chat template for the text roles, matching gemma4_common.gemma4_format.render_prompt.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for m in messages %}"
    "{% set role = 'model' if m['role'] == 'assistant' else m['role'] %}"
    "<|turn>{{ role }}\n{{ m['content'] | trim }}<turn|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|turn>model\n{% endif %}"
)
EXTRA_SPECIAL = {
    "sot_token": "<|turn>", "eot_token": "<turn|>", "soc_token": "<|channel>", "eoc_token": "<channel|>",
    "stc_token": "<|tool_call>", "etc_token": "<tool_call|>", "std_token": "<|tool>", "etd_token": "<tool|>",
    "str_token": "<|tool_response>", "etr_token": "<tool_response|>", "escape_token": '<|"|>',
    "think_token": "<|think|>",
}


@dataclass(frozen=True)
class TinySpec:
    name: str
    hidden_size: int
    num_hidden_layers: int
    layer_types: tuple[str, ...]
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    global_head_dim: int
    intermediate_size: int
    num_kv_shared_layers: int
    use_double_wide_mlp: bool
    hidden_size_per_layer_input: int
    sliding_window: int
    vocab_size: int = 512
    train_steps: int = 1200
    batch_size: int = 16
    lr: float = 3e-3
    seed: int = 0
    mirrors: str = ""

    def key(self) -> str:
        blob = json.dumps({"spec": asdict(self), "corpus": corpus.CORPUS_VERSION, "build": BUILD_VERSION},
                          sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


S, F = "sliding_attention", "full_attention"
SPECS: dict[str, TinySpec] = {
    # E2B: 35 layers 4:1 sliding:full, 8/1 heads, 20 KV-shared layers, double-wide MLP on shared layers.
    "e2b-tiny": TinySpec("e2b-tiny", hidden_size=64, num_hidden_layers=10, layer_types=(S, S, S, S, F) * 2,
                         num_attention_heads=4, num_key_value_heads=1, head_dim=16, global_head_dim=32,
                         intermediate_size=128, num_kv_shared_layers=5, use_double_wide_mlp=True,
                         hidden_size_per_layer_input=16, sliding_window=64, mirrors="e2b"),
    # E4B: 42 layers 5:1, 8/2 heads, 18 KV-shared layers, no double-wide MLP.
    "e4b-tiny": TinySpec("e4b-tiny", hidden_size=96, num_hidden_layers=12, layer_types=(S, S, S, S, S, F) * 2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=16, global_head_dim=32,
                         intermediate_size=192, num_kv_shared_layers=6, use_double_wide_mlp=False,
                         hidden_size_per_layer_input=16, sliding_window=64, mirrors="e4b"),
}


def get_spec(name: str) -> TinySpec:
    if name not in SPECS:
        raise UserError(f"unknown tiny model {name!r}", f"use one of: {', '.join(SPECS)}")
    return SPECS[name]


def cache_root() -> Path:
    return state_dir()


def make_tokenizer(texts: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    bos = tok.token_to_id("<bos>")
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", pair="<bos> $A <bos> $B",
                                                       special_tokens=[("<bos>", bos)])
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                 extra_special_tokens=EXTRA_SPECIAL, model_max_length=4096)
    hf.chat_template = CHAT_TEMPLATE
    return hf


def make_config(spec: TinySpec, tokenizer) -> Any:
    from transformers import Gemma4TextConfig

    v = len(tokenizer)
    ids = tokenizer.convert_tokens_to_ids
    return Gemma4TextConfig(
        vocab_size=v, vocab_size_per_layer_input=v, hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size, num_hidden_layers=spec.num_hidden_layers,
        layer_types=list(spec.layer_types), num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads, head_dim=spec.head_dim,
        global_head_dim=spec.global_head_dim, num_kv_shared_layers=spec.num_kv_shared_layers,
        use_double_wide_mlp=spec.use_double_wide_mlp,
        hidden_size_per_layer_input=spec.hidden_size_per_layer_input, sliding_window=spec.sliding_window,
        final_logit_softcapping=30.0, max_position_embeddings=4096, tie_word_embeddings=True,
        pad_token_id=ids("<pad>"), bos_token_id=ids("<bos>"),
        eos_token_id=[ids("<eos>"), ids("<turn|>"), ids("<|tool_response>")],
    )


def train(model, tokenizer, examples: list["corpus.Example"], spec: TinySpec,
          on_step: Callable[[int, float], None] | None = None) -> list[float]:
    """Next-token training on the model's turns only: the prompt is context, not a target, so that
    all of the small model's capacity goes to answering (copying names, calls, sums) correctly."""
    import torch

    # The matrices are tiny: one thread is as fast as two and never stalls in OpenMP spin-waits
    # when other processes share the cores (measured here: 2 threads under load ran ~10x slower).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(model, tokenizer, examples, spec, on_step)
    finally:
        torch.set_num_threads(threads)


def _train(model, tokenizer, examples, spec: TinySpec, on_step) -> list[float]:
    import torch

    torch.manual_seed(spec.seed)
    rng = random.Random(spec.seed)
    encoded, n_prompt = [], []
    for e in examples:
        p = tokenizer(e.prompt)["input_ids"]  # BOS + prompt, as the engine sees it
        t = tokenizer(e.target, add_special_tokens=False)["input_ids"]
        encoded.append(p + t)
        n_prompt.append(len(p))
    pad = tokenizer.pad_token_id
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=0.0, betas=(0.9, 0.98))
    warm = 30
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / spec.train_steps))))
    model.train()
    losses = []
    # Length-bucketed batches: similar lengths together, so that little compute goes to padding.
    by_len = sorted(range(len(encoded)), key=lambda i: (len(encoded[i]), i))
    buckets = [by_len[i : i + spec.batch_size] for i in range(0, len(by_len), spec.batch_size)]
    order: list[list[int]] = []
    for step in range(spec.train_steps):
        if not order:
            order = list(buckets)
            rng.shuffle(order)
        idx = order.pop()
        batch = [encoded[i] for i in idx]
        n = max(len(b) for b in batch)
        ids = torch.full((len(batch), n), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), n), dtype=torch.long)
        labels = torch.full((len(batch), n), -100, dtype=torch.long)
        for r, (i, b) in enumerate(zip(idx, batch)):
            ids[r, : len(b)] = torch.tensor(b)
            mask[r, : len(b)] = 1
            labels[r, n_prompt[i] : len(b)] = torch.tensor(b[n_prompt[i]:])
        out = model(input_ids=ids, attention_mask=mask, labels=labels)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(float(out.loss.detach()))
        if on_step:
            on_step(step, losses[-1])
    model.eval()
    return losses


@contextlib.contextmanager
def _cache_lock(path: Path):
    """Serialise builds of one cache entry across processes (tests, demo, helpers) so that
    a second process waits for the first instead of training or converting again."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def build_tiny(name: str, root: Path | None = None, *, force: bool = False,
               on_step: Callable[[int, float], None] | None = None) -> Path:
    """Return the directory of the trained tiny checkpoint `name`, training it if not cached."""
    spec = get_spec(name)
    root = root or cache_root() / "tiny"
    final = root / f"{name}-{spec.key()}"
    if (final / "model.safetensors").is_file() and not force:
        return final
    with _cache_lock(final):
        if (final / "model.safetensors").is_file() and not force:
            return final
        return _train_and_save(spec, final, on_step)


def _train_and_save(spec: TinySpec, final: Path, on_step: Callable[[int, float], None] | None) -> Path:
    name = spec.name
    import torch

    torch.manual_seed(spec.seed)
    examples = corpus.training_examples(spec.seed)
    tok = make_tokenizer([e.text for e in examples], spec.vocab_size)
    cfg = make_config(spec, tok)
    from transformers import Gemma4ForCausalLM

    model = Gemma4ForCausalLM(cfg)
    t0 = time.perf_counter()
    losses = train(model, tok, examples, spec, on_step)
    with atomic_dir(final, replace=True) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "tiny_model_card.json").write_text(json.dumps({
            "name": name, "mirrors": spec.mirrors, "spec": asdict(spec), "key": spec.key(),
            "corpus_version": corpus.CORPUS_VERSION, "train_seconds": round(time.perf_counter() - t0, 1),
            "final_loss": sum(losses[-20:]) / 20, "first_loss": losses[0],
            "num_parameters": sum(p.numel() for p in model.parameters()),
        }, indent=2))
    return final


def card(path: Path) -> dict[str, Any]:
    p = path / "tiny_model_card.json"
    return json.loads(p.read_text()) if p.is_file() else {}


DEFAULT_PREFILL = (128,)
DEFAULT_CACHE = 1024


def cached_bundles(checkpoint: Path, recipes: list[str], *, prefill_lengths=DEFAULT_PREFILL,
                   cache_length: int = DEFAULT_CACHE, root: Path | None = None, progress=None) -> dict[str, Path]:
    """Convert `checkpoint` once per content hash (checkpoint files, recipes, lengths, tool versions)
    and return {recipe name: bundle dir}. Used by the demo and by the test session."""
    from converters.checkpoint import checkpoint_hash
    from converters.export import tool_versions
    from converters.pipeline import ConvertRequest, convert
    from converters.recipes import parse_recipes

    names = [r.name for r in parse_recipes(recipes)]
    blob = json.dumps({"ckpt": checkpoint_hash(checkpoint), "recipes": names, "prefill": list(prefill_lengths),
                       "cache": cache_length, "tools": tool_versions(), "build": BUILD_VERSION}, sort_keys=True)
    key = hashlib.sha256(blob.encode()).hexdigest()[:16]
    out = (root or cache_root() / "bundles") / f"{checkpoint.name}-{key}"
    paths = {n: (out if len(names) == 1 else out / n) for n in names}
    if all((p / "manifest.json").is_file() for p in paths.values()):
        return paths
    with _cache_lock(out):
        if not all((p / "manifest.json").is_file() for p in paths.values()):
            convert(ConvertRequest(checkpoint=checkpoint, out_dir=out, recipes=names,
                                   prefill_lengths=list(prefill_lengths), cache_length=cache_length, force=True),
                    progress)
    return paths
