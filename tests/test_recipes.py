"""Every recipe: ai-edge-quantizer's (by introspection), ours and recipe JSON files, each either
quantizing e2b-tiny's float export or refused in one line; `--recipe list`, plan and bad recipe files."""

from __future__ import annotations

import json

import pytest

from support.cli import assert_one_line_error, cli

# ai-edge-quantizer 0.10.0's recipe module (a private layout, read by recipes.library_recipe_names).
AEQ_0_10_0_RECIPES = {
    "dynamic_wi8_afp32", "dynamic_wi4_afp32", "weight_only_wi8_afp32", "weight_only_wi4_afp32",
    "static_wi8_ai8", "static_wi8_ai16", "dynamic_legacy_wi8_afp32",
    "dynamic_wi8c_afp32", "dynamic_wi4c_afp32", "dynamic_wi2c_afp32",
    "dynamic_wi8b32_afp32", "dynamic_wi4b32_afp32", "dynamic_wi2b32_afp32",
    "dynamic_wi8b64_afp32", "dynamic_wi4b64_afp32", "dynamic_wi2b64_afp32",
    "dynamic_wi8c_hr_afp32", "dynamic_wi4c_hr_afp32", "dynamic_wi2c_hr_afp32",
    "gemma4_mixed48", "gemma4_mixed48_hr", "gemma4_mixed48_b32", "gemma4_mixed48_b64",
}


def test_library_recipes_introspected_and_pinned():
    """Fails on an ai-edge-quantizer upgrade that adds, drops or renames recipes: re-check the
    introspection and the groups/bits decoded from the names, then update the pin."""
    from importlib.metadata import version

    from converters.recipes import RECIPES, library_recipe_names

    assert version("ai-edge-quantizer") == "0.10.0"
    assert set(library_recipe_names()) == AEQ_0_10_0_RECIPES
    for name in AEQ_0_10_0_RECIPES:
        cfg = RECIPES[name].quantizer_config()
        assert isinstance(cfg, (list, dict)) and cfg, name


def test_groups_bits_and_calibration_flags():
    from ai_edge_quantizer import recipe_manager

    from converters.recipes import RECIPES, grouped

    g = grouped()
    assert {r.name for r in g["static"]} == {"static_wi8_ai8", "static_wi8_ai16"}
    assert {r.name for r in g["weight_only"]} == {"weight_only_wi8_afp32", "weight_only_wi4_afp32"}
    assert len(g["gemma4_mixed"]) == 4 and g["float"][0].name == "fp32"
    assert RECIPES["dynamic_wi4b32_afp32"].weight_bits == 4.5
    assert RECIPES["dynamic_wi2b64_afp32"].weight_bits == 2.25
    # needs_calibration agrees with the quantizer's own verdict on the built recipe.
    for r in RECIPES.values():
        if r.is_float or isinstance(r.quantizer_config(), dict):
            continue
        rm = recipe_manager.RecipeManager()
        rm.load_quantization_recipe(r.quantizer_config())
        assert rm.need_calibration() == r.needs_calibration, r.name


def test_recipe_list_cli_groups():
    res = cli("convert", "--recipe", "list")
    assert res.code == 0, res.err
    for heading in ("float", "dynamic range", "weight-only", "static / calibrated", "Gemma 4 mixed", "ours"):
        assert heading in res.out
    assert "dynamic_wi4c_hr_afp32" in res.out and "bits/weight" in res.out
    rows = cli("convert", "--recipe", "list", "--json").json()
    assert {r["name"] for r in rows} >= AEQ_0_10_0_RECIPES | {"npu_a16w8_qualcomm", "static_wi4_ai16"}


def test_plan_accepts_every_name_and_a_file(tmp_path):
    from converters.recipes import RECIPES

    for name in ("dynamic_wi4c_hr_afp32", "static_wi8_ai16", "gemma4_mixed48_b64", "w4a16"):
        res = cli("plan", "-m", "e2b", "--recipe", name, "--context", "4096", "--json")
        assert res.code == 0, (name, res.err)
    f = tmp_path / "mine.json"
    f.write_text(json.dumps(RECIPES["dynamic_wi4c_afp32"].quantizer_config()))
    res = cli("plan", "-m", "e2b", "--recipe", str(f), "--context", "4096", "--json")
    assert res.code == 0, res.err
    assert res.json()["recipe"] == "mine"


@pytest.mark.parametrize("content, needles", [
    ("{not json", ["not valid JSON", "line 1"]),
    ("[]", ["entry", "non-empty list"]),
    ('[{"regex": ".*", "operation": "*"}]', ["entry[0]", "algorithm_key"]),
    ('[{"regex": "(", "operation": "*", "algorithm_key": "min_max_uniform_quantize", "op_config": {}}]',
     ["entry[0]", "regular expression"]),
    ('[{"regex": ".*", "operation": "*", "algorithm_key": "min_max_uniform_quantize", '
     '"op_config": {"weight_tensor_config": {"num_bits": "eight"}}}]', ["entry[0]", "num_bits"]),
    ('[{"regex": ".*", "operation": "*", "algorithm_key": "min_max_uniform_quantize", '
     '"op_config": {"weight_tensor_config": {"num_bits": 8, "granularity": "DIAGONAL"}}}]',
     ["entry[0]", "granularity"]),
    ('{"tf_lite_decoder": []}', ["unknown section", "tf_lite_prefill_decode"]),
])
def test_bad_recipe_file_one_line(tiny_e2b, tmp_path, content, needles):
    f = tmp_path / "bad.json"
    f.write_text(content)
    res = cli("convert", tiny_e2b, "-o", tmp_path / "out", "--recipe", str(f))
    assert_one_line_error(res, str(f), *needles)
    assert not (tmp_path / "out").exists()


def test_missing_recipe_file_and_unknown_name(tiny_e2b, tmp_path):
    res = cli("convert", tiny_e2b, "-o", tmp_path / "out", "--recipe", str(tmp_path / "nope.json"))
    assert_one_line_error(res, "does not exist")
    res = cli("convert", tiny_e2b, "-o", tmp_path / "out", "--recipe", "dynamic_wi4c_afp3")
    assert_one_line_error(res, "unknown recipe", "did you mean dynamic_wi4c_afp32")
    assert not (tmp_path / "out").exists()


def test_static_recipe_needs_calibration(tiny_e2b, tmp_path):
    for name in ("static_wi8_ai16", "w8a8", "npu_a16w8_qualcomm"):
        res = cli("convert", tiny_e2b, "-o", tmp_path / "out", "--recipe", name)
        assert_one_line_error(res, "needs calibration data", "--calibration")
    assert not (tmp_path / "out").exists()


# ---- every recipe over one float export ---------------------------------------------------------
@pytest.fixture(scope="module")
def float_export(tiny_e2b, tmp_path_factory):
    from converters.export import ExportOptions, captured_output, export_float

    work = tmp_path_factory.mktemp("recipes")
    with captured_output(work / "export.log"):
        fx = export_float(tiny_e2b, work / "float", ExportOptions(prefill_lengths=[32], cache_length=256))
    return fx, work


@pytest.mark.slow
def test_every_recipe_converts_or_is_refused_in_one_line(float_export, tiny_e2b):
    """The pipeline's quantize + package step for each of the 28 recipes on one export: a bundle
    model, or a UserError whose message (the library's reason) is one line."""
    from converters import census
    from converters.calibration import calibrator_for, check_lengths, checkpoint_tokenizer, load_set
    from converters.export import package, quantize_artifacts
    from converters.pipeline import _third_party_step
    from converters.recipes import RECIPES
    from gemma4_common.errors import UserError

    fx, work = float_export
    ids = check_lengths(load_set(None), checkpoint_tokenizer(tiny_e2b), 256)[:3]
    log = work / "q.log"
    outcome = {}
    for name, r in RECIPES.items():
        try:
            with _third_party_step(f"quantizing with {name}", log):
                arts = quantize_artifacts(fx, r, work / name, calibrate=calibrator_for(ids) if r.needs_calibration
                                          else None)
                model = package(fx, arts, work / f"pkg-{name}")
            c = census.census(model)["tf_lite_prefill_decode"]
            outcome[name] = ("ok", c["decode"]["total"])
            assert model.stat().st_size > 0
        except UserError as e:
            assert "\n" not in e.problem and "\n" not in e.fix, name
            outcome[name] = ("refused", e.problem)
    refused = {n for n, (k, _) in outcome.items() if k == "refused"}
    # The tiny model's 16- and 160-wide tensors are not tiled by 32/64-wide int4/int2 blocks.
    assert refused == {"dynamic_wi4b32_afp32", "dynamic_wi2b32_afp32", "dynamic_wi4b64_afp32",
                       "dynamic_wi2b64_afp32"}, outcome
    assert "not divisible by block size 64" in outcome["dynamic_wi4b64_afp32"][1]
    assert len(outcome) == len(RECIPES) >= 28


@pytest.mark.slow
def test_recipe_json_file_converts_like_its_name(float_export, tmp_path):
    from converters import census
    from converters.export import package, quantize_artifacts
    from converters.recipes import RECIPES, get_recipe

    fx, work = float_export
    f = tmp_path / "mixed.json"
    cfg = RECIPES["gemma4_mixed48"].quantizer_config()
    f.write_text(json.dumps(cfg, default=str))
    r = get_recipe(str(f))
    assert r.group == "file" and r.sha256 and r.name == "mixed"
    a = package(fx, quantize_artifacts(fx, r, work / "file-q"), work / "file-pkg")
    b = package(fx, quantize_artifacts(fx, RECIPES["gemma4_mixed48"], work / "name-q"), work / "name-pkg")
    assert census.census(a) == census.census(b)
