"""`plan`: the footprint arithmetic against hand-computed cases, the presets against transformers,
and the bundle-size estimate against the real tiny bundles."""

from __future__ import annotations

import json

from support.cli import assert_one_line_error, cli

MiB = 1 << 20


def test_presets_are_the_published_configs():
    from converters.checkpoint import detect_variant
    from converters.presets import PRESETS

    e2b, e4b = PRESETS["e2b"]["text_config"], PRESETS["e4b"]["text_config"]
    assert (e2b["hidden_size"], e2b["num_hidden_layers"], e2b["num_kv_shared_layers"], e2b["intermediate_size"]) == \
        (1536, 35, 20, 6144)
    assert e2b["layer_types"].count("full_attention") == 7 and e2b["layer_types"][4] == "full_attention"
    assert (e4b["hidden_size"], e4b["num_hidden_layers"], e4b["num_key_value_heads"], e4b["intermediate_size"]) == \
        (2560, 42, 2, 10240)
    assert e4b["layer_types"].count("full_attention") == 7 and e4b["layer_types"][5] == "full_attention"
    assert detect_variant(e2b) == "e2b" and detect_variant(e4b) == "e4b"


def test_tower_parameter_counts_match_transformers():
    import torch
    from transformers import Gemma4AudioConfig, Gemma4VisionConfig
    from transformers.models.gemma4 import modeling_gemma4 as m

    from converters import presets

    cfg = {k: v for k, v in presets.VISION_CONFIG.items() if k != "model_type"}
    acfg = {k: v for k, v in presets.AUDIO_CONFIG.items() if k != "model_type"}
    with torch.device("meta"):
        v = m.Gemma4VisionModel(Gemma4VisionConfig(**cfg))
        a = m.Gemma4AudioModel(Gemma4AudioConfig(**acfg))
    assert sum(p.numel() for p in v.parameters()) == presets.VISION_ENCODER_PARAMS
    assert sum(p.numel() for p in a.parameters()) == presets.AUDIO_ENCODER_PARAMS


def test_param_count_by_hand_e2b_tiny(tiny_e2b):
    """e2b-tiny: hidden 64, 10 layers (S S S S F) x 2, 4 heads, 1 KV head, head dim 16 / 32, MLP 128
    (256 on the 5 KV-shared layers), per-layer width 16, vocab 512."""
    from converters.checkpoint import inspect_checkpoint
    from converters.planner import count_params, load_shape

    h, ple, v = 64, 16, 512
    q_o = lambda hd: 2 * h * 4 * hd  # noqa: E731
    kv = lambda hd: 2 * h * 1 * hd  # noqa: E731
    mlp = lambda i: 3 * h * i  # noqa: E731
    per_layer_io = 2 * h * ple
    own = 4 * (q_o(16) + kv(16) + mlp(128)) + (q_o(32) + kv(32) + mlp(128))  # layers 0-4
    shared = 4 * (q_o(16) + mlp(256)) + (q_o(32) + mlp(256))  # layers 5-9: no K/V projections
    linear = own + shared + 10 * per_layer_io + h * 10 * ple
    norms = (h + ple) + 10 * (5 * h + 1) + 8 * 16 + 2 * 32 + 4 * 16 + 32  # q_norm everywhere, k_norm on 0-4
    pc = count_params(load_shape(str(tiny_e2b)))
    assert pc.linear == linear
    assert pc.norms == norms
    assert pc.embedding == v * h and pc.per_layer_embedding == v * 10 * ple
    assert pc.checkpoint_text == inspect_checkpoint(tiny_e2b).num_parameters


def test_kv_cache_by_hand():
    from converters.planner import kv_cache_bytes, load_shape

    e2b = load_shape("e2b")
    # 15 layers own KV (20 of 35 reuse it): 12 sliding (head dim 256), 3 full (512); 1 KV head, fp32.
    sl, fu = kv_cache_bytes(e2b, 4096)
    assert sl == 12 * 2 * 1 * 256 * 4096 * 4 == 96 * MiB
    assert fu == 3 * 2 * 1 * 512 * 4096 * 4 == 48 * MiB
    # A 640-token ring buffer bounds the sliding layers; the full layers still grow with context.
    sl, fu = kv_cache_bytes(e2b, 131072, ring_buffer=640)
    assert sl == 12 * 2 * 256 * 640 * 4
    assert fu == 3 * 2 * 512 * 131072 * 4 == 1536 * MiB
    # E4B: 24 layers own KV (5 sliding : 1 full -> 20 sliding, 4 full), 2 KV heads.
    sl, fu = kv_cache_bytes(load_shape("e4b"), 32768)
    assert sl == 20 * 2 * 2 * 256 * 32768 * 4
    assert fu == 4 * 2 * 2 * 512 * 32768 * 4
    # Ring-buffer sizes are rounded up to 32 as litert-torch does.
    assert kv_cache_bytes(e2b, 8192, ring_buffer=600) == kv_cache_bytes(e2b, 8192, ring_buffer=608)


def test_bundle_bytes_by_hand():
    """E2B, int4 blockwise (4.5 bits/weight): the weights of each section."""
    from converters.planner import count_params, estimate_bundle, load_shape
    from converters.recipes import get_recipe

    s = load_shape("e2b")
    pc = count_params(s)
    assert pc.embedding == 262144 * 1536
    assert pc.per_layer_embedding == 262144 * 35 * 256
    b = estimate_bundle(s, get_recipe("int4"), prefill_lengths=[128], cache_lengths=[4096])
    assert b.sections["per_layer_embedder"] - 262144 * 35 * 256 * 4.5 / 8 < 20_000
    assert b.sections["embedder"] - 262144 * 1536 * 4.5 / 8 < 20_000
    # int8 is ~1.8x int4-blockwise, fp32 ~4x int8 (the norms and graph are small)
    b8 = estimate_bundle(s, get_recipe("int8")).total
    b32 = estimate_bundle(s, get_recipe("fp32")).total
    assert 1.7 < b8 / b.total < 1.8 and 3.9 < b32 / b8 < 4.01


def test_fits_and_suggestions():
    from converters.planner import plan

    budget = int(4.8 * 2**30)  # galaxy-s24 app budget
    ok = plan("e2b", "int4", 4096, budget_bytes=budget)
    assert ok.fits
    assert ok.memory["total"] == (ok.memory["resident_weights"] + ok.memory["kv_cache"] + ok.memory["activations"]
                                  + ok.memory["overhead"])
    bad = plan("e4b", "fp32", 131072, budget_bytes=budget)
    assert bad.fits is False
    assert bad.suggestions and all(s["memory_total"] <= budget for s in bad.suggestions)
    assert all(s["recipe"] != "fp32" for s in bad.suggestions)
    # a ring buffer lets a longer context fit than without one
    best = bad.suggestions[0]
    assert best["ring_buffer"] is not None


def test_plan_cli(tmp_path):
    res = cli("plan", "--model", "e2b", "--recipe", "int4", "--context", "8192", "--profile", "galaxy-s24", "--json")
    assert res.code == 0, res.err
    d = res.json()
    assert d["fits"] is True and d["budget_bytes"] > 4e9
    assert d["memory"]["kv_full"] == 3 * 2 * 512 * 8192 * 4
    assert d["assumptions"]
    res = cli("plan", "--model", "e4b", "--recipe", "fp32", "--context", "131072", "--profile", "galaxy-s24")
    assert res.code == 0, res.err
    assert "DOES NOT FIT" in res.out and "would fit:" in res.out
    assert_one_line_error(cli("plan", "--model", "e9x", "--context", "10"), "neither a known model")
    assert_one_line_error(cli("plan", "--model", "e2b", "--recipe", "int3"), "unknown recipe")
    assert_one_line_error(cli("plan", "--model", "e2b", "--profile", "no-such-phone"), "unknown device profile")


def test_plan_device_serial(emulator):
    """--device reads MemAvailable from the device (the emulator reports its profile's budget)."""
    res = cli("plan", "-m", "e2b", "-r", "int4", "-c", "4096", "--device", emulator.serial, "--json")
    assert res.code == 0, res.err
    d = res.json()
    assert d["budget_bytes"] // 1024 == emulator.config.profile.ram_budget_bytes // 1024
    assert d["fits"] is True


def test_size_matches_real_tiny_bundles(e2b_bundles, tiny_e2b):
    """The estimate of each tiny bundle is within 5% of the file litert-torch wrote."""
    from converters.planner import estimate_bundle, load_shape
    from converters.recipes import get_recipe

    s = load_shape(str(tiny_e2b))
    for recipe, b in e2b_bundles.items():
        m = json.loads((b / "manifest.json").read_text())
        real = m["files"]["model.litertlm"]["size"]
        est = estimate_bundle(s, get_recipe(recipe), prefill_lengths=m["export"]["prefill_lengths"],
                              cache_lengths=m["export"].get("cache_lengths") or [m["export"]["cache_length"]]).total
        assert abs(est - real) / real < 0.05, (recipe, est, real)
