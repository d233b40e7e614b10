"""Multimodal: a tiny Gemma 4 checkpoint with vision and audio towers converts with `--vision --audio`,
its bundle holds the encoder sections, and `run --image` / `--audio` drive them on the host engine."""

from __future__ import annotations

import json
import math
import struct
import wave

import pytest

from support.cli import assert_one_line_error, cli

ENCODER_SECTIONS = {"tf_lite_vision_encoder", "tf_lite_vision_adapter", "tf_lite_audio_encoder_hw",
                    "tf_lite_audio_adapter"}


@pytest.fixture(scope="session")
def tiny_mm():
    from sdk_tools.tinymodels.multimodal import build_tiny_multimodal

    return build_tiny_multimodal()


@pytest.fixture(scope="session")
def mm_bundle(tiny_mm, tmp_path_factory):
    out = tmp_path_factory.mktemp("mm") / "bundle"
    res = cli("convert", tiny_mm, "-o", out, "-r", "int8", "--vision", "--audio", "--json")
    assert res.code == 0, res.err
    return out


@pytest.fixture
def image_file(tmp_path):
    from PIL import Image

    img = Image.new("RGB", (320, 200))
    for x in range(320):
        for y in range(0, 200, 4):
            img.putpixel((x, y), (x % 256, y, 128))
    p = tmp_path / "stripes.png"
    img.save(p)
    return p


@pytest.fixture
def audio_file(tmp_path):
    p = tmp_path / "tone.wav"
    rate = 16000
    with wave.open(str(p), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / rate)))
                               for i in range(rate)))
    return p


def test_tiny_multimodal_checkpoint_is_gemma4(tiny_mm):
    from converters.checkpoint import inspect_checkpoint

    info = inspect_checkpoint(tiny_mm)
    assert info.model_type == "gemma4" and info.has_vision and info.has_audio
    cfg = json.loads((tiny_mm / "config.json").read_text())
    assert cfg["architectures"] == ["Gemma4ForConditionalGeneration"]
    assert (tiny_mm / "preprocessor_config.json").is_file()


@pytest.mark.slow
def test_bundle_has_encoder_sections(mm_bundle):
    m = json.loads((mm_bundle / "manifest.json").read_text())
    assert m["export"]["vision"] is True and m["export"]["audio"] is True
    kinds = {s["model_type"] for s in m["sections"]}
    assert ENCODER_SECTIONS <= kinds, kinds
    assert {"tf_lite_prefill_decode", "tf_lite_embedder", "tf_lite_per_layer_embedder"} <= kinds


@pytest.mark.slow
def test_run_text_only_on_multimodal_bundle(mm_bundle):
    res = cli("run", mm_bundle, "--prompt", "hello", "--max-tokens", "4", "--json")
    assert res.code == 0, res.err
    assert res.json()["decode_tokens"] > 0


@pytest.mark.slow
def test_run_image_prompt(mm_bundle, image_file):
    res = cli("run", mm_bundle, "--prompt", "What is in the picture?", "--image", image_file,
              "--max-tokens", "4", "--json")
    assert res.code == 0, res.err
    d = res.json()
    # the image's soft tokens are part of the prefill
    assert d["prefill_tokens"] > 20 and d["decode_tokens"] > 0


@pytest.mark.slow
def test_run_audio_prompt(mm_bundle, audio_file):
    res = cli("run", mm_bundle, "--prompt", "Transcribe.", "--audio", audio_file, "--max-tokens", "4", "--json")
    assert res.code == 0, res.err
    d = res.json()
    assert d["prefill_tokens"] > 20 and d["decode_tokens"] > 0


def test_vision_on_text_only_checkpoint_refused(tiny_e2b, tmp_path):
    res = cli("convert", tiny_e2b, "-o", tmp_path / "o", "--vision")
    assert_one_line_error(res, "no vision tower", "--vision")
    assert not (tmp_path / "o").exists()


def test_image_on_text_bundle_refused(e2b_int8_bundle, tmp_path):
    img = tmp_path / "x.png"
    img.write_bytes(b"not really")
    assert_one_line_error(cli("run", e2b_int8_bundle, "--prompt", "hi", "--image", img), "no vision encoder")
