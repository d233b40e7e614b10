"""Calibration data (chat JSONL or the built-in set, rendered in the Gemma 4 format) and calibrated
static quantization of e2b-tiny: the bundle, its manifest, its census and its accuracy on the LiteRT
interpreter; every bad calibration input is one line with nothing left behind."""

from __future__ import annotations

import json

import pytest

from support.cli import assert_one_line_error, cli


def _chat(user: str, answer: str | None = None) -> str:
    msgs = [{"role": "user", "content": user}] + ([{"role": "assistant", "content": answer}] if answer else [])
    return json.dumps({"messages": msgs})


def test_default_set_is_gemma4_chat_tool_and_json():
    from converters.calibration import DEFAULT_SET, load_set

    cs = load_set(None)
    assert cs.name == "default" and len(cs.prompts) == len(DEFAULT_SET.read_text().splitlines()) >= 12
    assert all(p.startswith("<|turn>") and not p.startswith("<bos>") for p in cs.prompts)
    joined = "\n".join(cs.prompts)
    assert "<|tool>declaration:get_weather" in joined and "<|tool_call>call:add{" in joined
    assert "<|tool_response>response:" in joined and '{"city": "Dublin"' in joined
    assert load_set("default").sha256 == cs.sha256


def test_file_and_prompt_forms_hash_by_rendered_text(tmp_path):
    from converters.calibration import load_set

    a = tmp_path / "a.jsonl"
    a.write_text(_chat("What is 2 + 2?") + "\n\n" + _chat("Hi", "Hello!") + "\n")
    cs = load_set(a)
    assert cs.prompts[0] == "<|turn>user\nWhat is 2 + 2?<turn|>\n<|turn>model\n"
    assert cs.lines == [1, 3]
    b = tmp_path / "b.jsonl"
    b.write_text("\n".join(json.dumps({"prompt": "<bos>" + p}) for p in cs.prompts) + "\n")
    assert load_set(b).sha256 == cs.sha256


@pytest.mark.parametrize("content, needles", [
    (None, ["does not exist", "--calibration default"]),
    ("", ["holds no prompts"]),
    ("\n  \n", ["holds no prompts"]),
    ("{oops\n", ["line 1", "not JSON"]),
    ('["a list"]\n', ["line 1", "not a JSON object"]),
    ('{"text": "plain text"}\n', ["line 1", 'no "messages" or "prompt"']),
    ('{"prompt": "no turn markers here"}\n', ["line 1", "not a Gemma 4 formatted text"]),
    (_chat("ok") + '\n{"messages": [{"role": "robot", "content": "x"}]}\n', ["line 2", "no role"]),
    ('{"messages": [{"role": "model", "content": "only the model"}]}\n', ["line 1", "no user message"]),
    ('{"messages": []}\n', ["line 1", "non-empty list"]),
])
def test_bad_calibration_file_one_line(tiny_e2b, tmp_path, content, needles):
    f = tmp_path / "calib.jsonl"
    if content is not None:
        f.write_text(content)
    res = cli("convert", tiny_e2b, "-o", tmp_path / "out", "--recipe", "static_wi8_ai16", "--calibration", f)
    assert_one_line_error(res, *needles)
    assert not (tmp_path / "out").exists()


def test_calibration_prompt_longer_than_the_cache(tiny_e2b, tmp_path):
    f = tmp_path / "long.jsonl"
    f.write_text(_chat("short") + "\n" + _chat("word " * 200) + "\n")
    res = cli("convert", tiny_e2b, "-o", tmp_path / "out", "--recipe", "w8a16", "--calibration", f,
              "--prefill", "32", "--cache-length", "128")
    assert_one_line_error(res, "line 2", "more than the cache length 128", "--cache-length")
    assert not (tmp_path / "out").exists()
    # The built-in set drops what a small cache cannot hold (and hashes what it keeps); none left: refused.
    from converters.calibration import load_set, resolve
    from converters.recipes import get_recipe

    full = load_set(None)
    cs, ids = resolve("default", [get_recipe("w8a16")], False, tiny_e2b, 96)
    assert 0 < len(cs.prompts) < len(full.prompts) and cs.sha256 != full.sha256
    assert all(len(i) + 16 <= 96 for i in ids)
    res = cli("convert", tiny_e2b, "-o", tmp_path / "out", "--recipe", "w8a16", "--calibration", "default",
              "--prefill", "8", "--cache-length", "24")
    assert_one_line_error(res, "no prompt of the built-in calibration set fits the cache length 24")
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def static_bundles(tiny_e2b, tmp_path_factory):
    """static_wi8_ai16 and static_wi4_ai16 from one export, calibrated on the built-in set given as a
    file (its chat/tool/JSON prompts; 5 short prompts left the ranges too narrow: ppl x7)."""
    from converters.calibration import DEFAULT_SET

    work = tmp_path_factory.mktemp("static")
    f = work / "calib.jsonl"
    f.write_text(DEFAULT_SET.read_text())
    res = cli("convert", tiny_e2b, "-o", work / "out", "--recipe", "w8a16,static_wi4_ai16", "--calibration", f,
              "--prefill", "32", "--cache-length", "512", "--json")
    assert res.code == 0, res.err
    return work, f, {b["recipe"]: b["bundle"] for b in res.json()["bundles"]}


@pytest.mark.slow
def test_static_bundles_manifest_and_census(static_bundles):
    from pathlib import Path

    from converters import census
    from converters.calibration import load_set

    work, f, bundles = static_bundles
    assert set(bundles) == {"static_wi8_ai16", "static_wi4_ai16"}
    for name, bdir in bundles.items():
        m = json.loads((Path(bdir) / "manifest.json").read_text())
        r = m["recipe"]
        assert r["name"] == name and r["activation_bits"] == 16 and r["group"] in ("static", "ours")
        assert r["calibration"]["sha256"] == load_set(f).sha256 == load_set(None).sha256
        assert r["calibration"]["prompts"] == len(load_set(None).prompts) >= 16
        dec = census.census(Path(bdir) / "model.litertlm")["tf_lite_prefill_decode"]["decode"]
        assert dec["ops"].get("FULLY_CONNECTED:INT16", 0) > 0  # int16 activations
        assert r["census"]["tf_lite_prefill_decode"]["decode"]["ops"] == dec["ops"]


@pytest.mark.slow
def test_static_bundle_accuracy_on_the_interpreter(static_bundles, tiny_e2b):
    """Measured with verify's metrics on the LiteRT interpreter. Plain static recipes quantize the
    whole graph (norms, softmax, mask) and lose accuracy on the tiny model: the int8 gates are
    reported, and the measurement must show a working (not random) model."""
    from pathlib import Path

    from sdk_tools.accuracy.evalset import load_eval
    from sdk_tools.accuracy.interpreter import verify_interpreter
    from sdk_tools.accuracy.verify import VerifySettings

    _, _, bundles = static_bundles
    rep = verify_interpreter(Path(bundles["static_wi8_ai16"]) / "model.litertlm", tiny_e2b, load_eval(None, 12),
                             recipe="static_wi8_ai16", cache_length=512, settings=VerifySettings(max_new_tokens=12))
    s = rep["summary"]
    assert rep["recipe_class"] == "int8" and {c["metric"] for c in rep["gate_results"]} >= {"ppl_ratio",
                                                                                              "greedy_agreement"}
    assert s["scored_tokens"] > 50 and 1.0 < s["ppl_ratio"] < 3.0, s  # measured 1.66
    assert s["greedy_agreement"] is not None


@pytest.mark.slow
def test_sweep_rows_for_static_recipes(static_bundles, tiny_e2b):
    """The sweep's table gains rows for static recipes, measured on the interpreter (no host speed)."""
    from pathlib import Path

    from sdk_tools.accuracy.evalset import load_eval
    from sdk_tools.accuracy.sweep import sweep
    from sdk_tools.accuracy.verify import VerifySettings

    work, _, bundles = static_bundles
    res = sweep(tiny_e2b, ["static_wi8_ai16", "static_wi4_ai16"], work / "sweep", load_eval(None, 6),
                settings=VerifySettings(max_new_tokens=8), cache_length=512,
                bundles={k: Path(v) for k, v in bundles.items()})
    rows = {r["recipe"]: r for r in res["rows"]}
    assert set(rows) == {"static_wi8_ai16", "static_wi4_ai16"}
    for r in rows.values():
        assert r["engine"] == "interpreter" and r["decode_tps"] is None
        assert r["mean_logprob_delta"] is not None and r["mean_logprob_delta"] > 0
    md = Path(res["files"]["md"]).read_text()
    assert "| static_wi8_ai16 |" in md and "n/a" in md
