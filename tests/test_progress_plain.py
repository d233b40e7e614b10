"""Progress in pipes and CI logs (plain lines, heartbeats during long steps) and the third-party noise
filter (known noise hidden, errors kept, everything with verbose)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
import time

import pytest

from gemma4_common.errors import UserError
from gemma4_common.noise import is_noise
from gemma4_common.progress import PlainProgress


def _wait_for(stream: io.StringIO, needle: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while needle not in stream.getvalue():
        if time.monotonic() > deadline:
            raise AssertionError(f"{needle!r} not printed within {timeout} s:\n{stream.getvalue()}")
        time.sleep(0.01)
    return stream.getvalue()


def test_a_long_step_prints_a_heartbeat_with_done_and_total():
    out = io.StringIO()
    with PlainProgress(out, heartbeat_s=0.05) as p:
        with p.step("train tiny", total=1200):
            p.advance(412)
            _wait_for(out, "train tiny: 412/1200, ")
    lines = out.getvalue().splitlines()
    assert lines[0] == "train tiny ..."
    assert lines[-1].startswith("train tiny: done in ")


def test_a_step_without_a_total_says_it_is_still_running():
    out = io.StringIO()
    with PlainProgress(out, heartbeat_s=0.05) as p:
        with p.step("export float model"):
            _wait_for(out, "export float model: still running, ")


def test_byte_steps_count_in_megabytes_and_nested_steps_are_indented():
    out = io.StringIO()
    with PlainProgress(out, heartbeat_s=0.05) as p:
        with p.step("deploy"):
            with p.step("model.litertlm", total=4_000_000):
                p.advance(1_000_000)
                _wait_for(out, "  model.litertlm: 1.0/4.0 MB, ")
    assert out.getvalue().splitlines()[-1].startswith("deploy: done in ")


def test_no_heartbeat_while_lines_keep_coming_or_after_the_steps():
    out = io.StringIO()
    with PlainProgress(out, heartbeat_s=5.0) as p:
        with p.step("quick"):
            p.note("checkpoint: Gemma 4 E2B")
    time.sleep(0.1)
    lines = out.getvalue().splitlines()
    assert lines[:2] == ["quick ...", "  checkpoint: Gemma 4 E2B"] and len(lines) == 3
    assert lines[2].startswith("quick: done in ")


def test_a_failed_step_says_failed_and_a_silent_one_leaves_the_error_alone():
    out = io.StringIO()
    p = PlainProgress(out, heartbeat_s=5.0)
    with pytest.raises(UserError):
        with p.step("validate checkpoint"):
            raise UserError("bad config.json", "fix it")
    assert out.getvalue() == ""  # bad input: its one-line error is all that stderr will show
    with pytest.raises(UserError):
        with p.step("quantize int4"):
            p.note("3 layers done")
            raise UserError("bad recipe", "use another")
    p.close()
    lines = out.getvalue().splitlines()
    assert lines[:2] == ["quantize int4 ...", "  3 layers done"], lines
    assert lines[-1].startswith("quantize int4: failed after "), lines


def _child_fails_in_a_step(progress, on_work_dir=None):
    with progress.step("quantize in the child"):
        progress.note("quantizing")
        raise UserError("the quantizer refused", "use another recipe")


def test_a_relayed_step_that_fails_in_the_child_ends_as_failed():
    from converters.isolation import Isolated

    out = io.StringIO()
    child = Isolated(_child_fails_in_a_step, ())
    with PlainProgress(out, heartbeat_s=5.0) as p:
        outcome = child.relay(p)
    assert outcome[0] == "user_error"
    assert out.getvalue().splitlines()[-1].startswith("quantize in the child: failed after "), out.getvalue()


def _run(code: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.endswith("_VERBOSE")}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=120, env={**clean, **env})


def test_in_a_pipe_the_cli_reporter_prints_plain_lines_and_heartbeats():
    # stderr is a pipe here: the reporter the CLI picks is the plain one, with its heartbeat.
    r = _run("""
        import time
        from sdk_tools.cli.common import progress_reporter
        with progress_reporter(heartbeat_s=0.1) as p:
            print(type(p).__name__, flush=True)
            with p.step("convert", total=10):
                p.advance(3)
                time.sleep(0.5)
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "PlainProgress"
    assert "convert ...\n" in r.stderr
    assert "convert: 3/10, " in r.stderr
    assert "convert: done in " in r.stderr


NOISE_SCRIPT = """
    import logging, warnings
    from gemma4_common.noise import quiet_third_party
    quiet_third_party()
    ao = logging.getLogger("torchao")  # what torchao/__init__.py logs its failed kernel loads on
    ao.warning("Failed to load /venv/torchao/_C_mxfp8.cpython-310-x86_64-linux-gnu.so: Could not load this library")
    logging.getLogger("torch.utils._pytree").warning(
        "<enum 'KernelPreference'> is an Enum subclass and is now natively supported by torch.compile as an opaque "
        "value type. Calling register_constant() on Enum subclasses is deprecated")
    ao.error("Failed to load /venv/torchao/_C.so: ERROR the real one")
    ao.warning("quantization of layer 3 fell back to float")
    warnings.warn_explicit("`foo` is deprecated and will be removed in v5", FutureWarning, "x.py", 1,
                           module="transformers.modeling_utils")
    print("done")
"""


def test_the_noise_filter_hides_known_noise_and_keeps_errors():
    r = _run(NOISE_SCRIPT)
    assert r.returncode == 0 and r.stdout.strip() == "done", r.stderr
    assert "_C_mxfp8" not in r.stderr
    assert "Enum subclass" not in r.stderr
    assert "is deprecated and will be removed" not in r.stderr
    assert "Failed to load /venv/torchao/_C.so: ERROR the real one" in r.stderr  # an error always passes
    assert "fell back to float" in r.stderr  # a warning that is not known noise passes


def test_verbose_shows_the_noise_too():
    r = _run(NOISE_SCRIPT, GEMMA4_MOBILE_VERBOSE="1")
    assert "_C_mxfp8" in r.stderr
    assert "Enum subclass" in r.stderr
    assert "is deprecated and will be removed" in r.stderr


@pytest.mark.parametrize("line, noise", [
    ("INFO: Created TensorFlow Lite XNNPACK delegate for CPU.", True),
    ("I1201 19:40:20.480000 3839 litert_lm.cc:101] loading model", True),
    ("Failed to load /x/torchao/_C_cutlass_90a.abi3.so: Could not load this library", True),
    ("ERROR: failed to prepare the delegate", False),
    ("E1201 19:40:20.480000 3839 engine.cc:12] Failed to create engine", False),
    ("Traceback (most recent call last):", False),
    ("error: the bundle has no model.litertlm; pass a bundle directory", False),
])
def test_noise_lines(line, noise):
    assert is_noise(line) is noise
