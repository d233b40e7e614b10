"""The built-in tiny Gemma 4 models: real architecture, really trained (peaked predictions), and
their bundles matching PyTorch: float tightly, int8/int4 within looser stated tolerances."""

from __future__ import annotations

import json
import statistics

import pytest

from sdk_tools.tinymodels import corpus

# Stated tolerances on |log p_bundle - log p_torch| per target token over the held-out set.
FLOAT_MEAN, FLOAT_MAX = 2e-3, 2e-2
INT8_MEAN = 0.08
INT4_MEAN = 0.6


def test_real_gemma4_architecture(tiny_e2b, tiny_e4b):
    from transformers import AutoTokenizer

    for path, ratio, double_wide in [(tiny_e2b, 4, True), (tiny_e4b, 5, False)]:
        cfg = json.loads((path / "config.json").read_text())
        assert cfg["model_type"] == "gemma4_text" and cfg["architectures"] == ["Gemma4ForCausalLM"]
        lt = cfg["layer_types"]
        assert lt.count("sliding_attention") == ratio * lt.count("full_attention")
        assert lt[-1] == "full_attention"
        assert cfg["num_kv_shared_layers"] > 0 and cfg["hidden_size_per_layer_input"] > 0
        assert cfg["use_double_wide_mlp"] is double_wide
        assert cfg["per_layer_config"]  # full-attention layers use the wider global head dim
        tok = AutoTokenizer.from_pretrained(path)
        for t in ("<|turn>", "<turn|>", "<|tool_call>", "<tool_call|>", '<|"|>', "<|channel>"):
            ids = tok(t, add_special_tokens=False)["input_ids"]
            assert len(ids) == 1, t  # special tokens are atomic
        assert tok.chat_template and tok.apply_chat_template(
            [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
        ) == "<bos><|turn>user\nhi<turn|>\n<|turn>model\n"


def test_training_made_predictions_peaked(tiny_e2b):
    from sdk_tools.accuracy.reference import TorchReference
    from sdk_tools.tinymodels.build import card

    c = card(tiny_e2b)
    assert c["final_loss"] < c["first_loss"] / 10
    ref = TorchReference(tiny_e2b)
    probs = []
    for e in corpus.eval_examples()[::3]:
        probs += [2.718281828 ** lp for lp in ref.score(e.prompt, e.target).logprobs]
    # next-token distributions are peaked: the median target token gets most of the mass
    assert statistics.median(probs) > 0.9


def _greedy_prompts():
    ex = corpus.all_examples()
    by_kind = {}
    for e in ex:
        by_kind.setdefault(e.kind, e)
    return [by_kind["fact"], by_kind["chat"], by_kind["tool_call"]]


def test_greedy_continuation_is_expected_in_torch_and_float_bundle(tiny_e2b, e2b_fp32_bundle):
    from gemma4_common.gemma4_format import STOP_SEQUENCES
    from on_device.engine import HostEngine
    from sdk_tools.accuracy.reference import TorchReference

    ref = TorchReference(tiny_e2b)
    with HostEngine(e2b_fp32_bundle / "model.litertlm", max_num_tokens=1024) as eng:
        for e in _greedy_prompts():
            # both engines end at the model's stop token without emitting it
            expected = e.target.rstrip("\n")
            for s in STOP_SEQUENCES:
                expected = expected.removesuffix(s)
            assert ref.greedy(e.prompt, 48, stop=STOP_SEQUENCES) == expected
            got = eng.generate(e.prompt, 48, stop=STOP_SEQUENCES).text
            for s in STOP_SEQUENCES:
                got = got.removesuffix(s)
            assert got == expected


def _deltas(ref, bundle) -> list[float]:
    """|bundle - PyTorch| per target token, both scoring BOS + prompt + target."""
    from on_device.engine import HostEngine

    out = []
    with HostEngine(bundle / "model.litertlm", max_num_tokens=1024) as eng:
        for e in corpus.eval_examples()[::2]:
            r = ref.score(e.prompt, e.target)
            assert eng.tokenize(eng.bos_text() + e.prompt + e.target) == r.ids
            a = eng.score(e.prompt, e.target)
            assert len(a) == len(r.logprobs)
            out += [abs(x - y) for x, y in zip(a, r.logprobs)]
    return out


@pytest.mark.slow
def test_bundle_logprobs_match_pytorch(tiny_e2b, e2b_bundles):
    from sdk_tools.accuracy.reference import TorchReference

    ref = TorchReference(tiny_e2b)
    d = {r: _deltas(ref, b) for r, b in e2b_bundles.items()}
    mean = {r: statistics.fmean(v) for r, v in d.items()}
    assert mean["fp32"] < FLOAT_MEAN and max(d["fp32"]) < FLOAT_MAX, (mean, max(d["fp32"]))
    assert mean["dynamic_wi8_afp32"] < INT8_MEAN, mean
    assert mean["dynamic_wi4c_afp32"] < INT4_MEAN, mean
    # ordered as expected: the fewer bits, the further from the float model
    assert mean["fp32"] < mean["dynamic_wi8_afp32"] < mean["dynamic_wi4c_afp32"], mean
    sizes = {r: (b / "model.litertlm").stat().st_size for r, b in e2b_bundles.items()}
    assert sizes["dynamic_wi4c_afp32"] < sizes["dynamic_wi8_afp32"] < sizes["fp32"]
