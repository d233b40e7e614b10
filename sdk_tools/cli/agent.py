"""`gemma4-mobile agent BUNDLE --tools tools.py|tools.json [--device SERIAL]`: the agent loop (model ->
tool call -> execute -> tool response -> model) on the host engine or on a device through the
runner contract; `--json-schema FILE` generates one schema-valid JSON value instead."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Any, Iterator, Optional

import typer

from gemma4_common.errors import UserError
from sdk_tools.cli.common import emit_json, err_console
from sdk_tools.cli.options import DispatchLibsOption, JsonOption, resolve_runner, RunnerOption, VerboseOption


def load_schema_file(path: Path) -> dict:
    from on_device.agent.constrained import check_json_schema

    from gemma4_common.fsutil import read_json

    return check_json_schema(read_json(path, "fix the schema file", what="JSON schema file",
                                       missing_fix="pass an existing schema file"))


@contextlib.contextmanager
def _open_engine(bundle: Path, device: str | None, *, runner: Path | None, backend: str, dispatch_libs: Path | None,
                 threads: int | None, timeout_s: float, quiet: bool) -> Iterator[Any]:
    """The host engine, or the bundle deployed to `device` (progress shown while it deploys)."""
    from sdk_tools.engines import bundle_manifest, open_text_engine

    bundle_manifest(bundle, verify=False)  # a wrong path fails before a device is opened
    if device is None:
        with open_text_engine(bundle, threads=threads) as engine:
            yield engine
        return
    from sdk_tools.cli.common import RichProgress
    from sdk_tools.devices.discovery import open_device

    with contextlib.ExitStack() as stack:
        dev = stack.enter_context(open_device(device))
        with RichProgress(enabled=not quiet) as progress:
            engine = stack.enter_context(open_text_engine(
                bundle, dev, runner=runner, backend=backend, dispatch_libs=dispatch_libs, threads=threads,
                timeout_s=timeout_s, progress=progress))
        yield engine


def _read_prompt(prompt: str | None) -> str:
    from gemma4_common.validate import text as check_text

    if prompt is not None:
        if not prompt.strip():
            raise UserError("--prompt is empty", "pass the user's message with --prompt TEXT")
        return check_text(prompt, "--prompt")
    if sys.stdin is None or sys.stdin.isatty():
        raise UserError("no prompt", "pass --prompt TEXT or pipe the user's message on stdin")
    try:
        text = sys.stdin.read()
    except UnicodeDecodeError as e:
        raise UserError(f"the prompt on stdin is not valid UTF-8 (byte {e.start})",
                        "pipe UTF-8 text, or pass --prompt TEXT") from None
    if not text.strip():
        raise UserError("the prompt on stdin is empty", "pass --prompt TEXT")
    return check_text(text.strip(), "the prompt on stdin")


def _fmt_call(c) -> str:
    args = ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in c.arguments.items())
    tail = f" -> {json.dumps(c.response, ensure_ascii=False)}"
    return f"tool {c.name}({args}){tail}" + (f" [{c.error}]" if c.error else "")


def agent(
    bundle: Path = typer.Argument(..., help="Bundle directory made by `gemma4-mobile convert`."),
    tools: Optional[Path] = typer.Option(None, "--tools", "-t", help="tools.py (@tool functions, or a TOOLS "
                                         "dict with tools.json beside it) or tools.json (specs; functions from "
                                         "the .py of the same name)."),
    device: Optional[str] = typer.Option(None, "--device", "-d", help="Run the model on this device (serial) "
                                         "through the runner contract; default: the host CPU engine."),
    prompt: Optional[str] = typer.Option(None, "--prompt", "-p", help="The user's message (default: stdin)."),
    system: Optional[str] = typer.Option(None, "--system", help="System instruction."),
    max_steps: int = typer.Option(8, "--max-steps", help="Most model generations in one run."),
    timeout: float = typer.Option(60.0, "--timeout", help="Seconds a tool call (and, on a device, one "
                                  "generation) may take."),
    transcript: Optional[Path] = typer.Option(None, "--transcript", help="Write the full transcript (JSON) here."),
    json_schema: Optional[Path] = typer.Option(None, "--json-schema", help="Structured output: answer with one "
                                               "JSON value valid for this schema (constrained decoding)."),
    max_tokens: int = typer.Option(256, "--max-tokens", help="Most tokens per generation."),
    thinking: bool = typer.Option(False, "--thinking", help="Enable the thinking channel."),
    backend: str = typer.Option("cpu", "--backend", help="Device backend: cpu, gpu or npu (with --device)."),
    runner: RunnerOption = None,
    dispatch_libs: DispatchLibsOption = None,
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads."),
    as_json: JsonOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Run a Gemma 4 agent: the model calls your tools until it answers."""
    from gemma4_common.fsutil import check_output_file, write_output_text
    from gemma4_common.validate import positive
    from on_device.agent import AgentLoop, Message, ToolRegistry, render_prompt
    from on_device.agent.constrained import ConstrainedDecodingError, generate_json

    if max_steps < 1:
        raise UserError(f"--max-steps must be at least 1, got {max_steps}")
    if timeout <= 0:
        raise UserError(f"--timeout must be positive, got {timeout:g}")
    if max_tokens < 1:
        raise UserError(f"--max-tokens must be at least 1, got {max_tokens}")
    positive(threads, "--threads", example=4)
    if transcript is not None:
        check_output_file(transcript, "--transcript")  # before the model loads
    if backend.lower() not in ("cpu", "gpu", "npu"):
        raise UserError(f"--backend must be cpu, gpu or npu, got {backend!r}")
    if device is None and (backend.lower() != "cpu" or runner or dispatch_libs):
        raise UserError("--backend/--runner/--dispatch-libs need --device", "the host engine runs on the CPU")
    if tools is not None and json_schema is not None:
        raise UserError("--tools and --json-schema cannot be combined", "use one mode per run")
    if tools is None and json_schema is None:
        raise UserError("no tools given", "pass --tools tools.py|tools.json (or --json-schema FILE)")
    # Everything the user passed is checked before the model loads.
    registry = ToolRegistry.load(tools) if tools is not None else None
    schema = load_schema_file(json_schema) if json_schema is not None else None
    user = _read_prompt(prompt)
    runner_path = resolve_runner(runner) if device is not None else None

    with _open_engine(bundle, device, runner=runner_path, backend=backend.lower(), dispatch_libs=dispatch_libs,
                      threads=threads, timeout_s=timeout, quiet=as_json) as engine:
        if schema is not None:
            text_prompt = render_prompt([Message("user", user)], system=system, add_bos=False)
            try:
                gen = generate_json(engine, text_prompt, schema, max_tokens, details=True)
            except ConstrainedDecodingError as e:
                raise UserError(f"the model's JSON breaks the schema ({e}): {e.text}",
                                "constrained decoding enforces type/properties/enum/ranges; "
                                "pattern and format are only checked") from None
            result = {"mode": "json", "prompt": user, "system": system, "schema": schema, **gen.to_dict(),
                      "device": device}
            if transcript is not None:
                write_output_text(transcript, json.dumps(result, indent=2, ensure_ascii=False) + "\n",
                                  "--transcript")
            if as_json:
                emit_json(result)
            else:
                typer.echo(gen.text)
            return
        loop = AgentLoop(engine, registry, system=system, max_steps=max_steps, step_timeout_s=timeout,
                         max_new_tokens=max_tokens, enable_thinking=thinking)
        tr = loop.run(user)
    data = {"mode": "agent", "device": device, **tr.to_dict()}
    if transcript is not None:
        write_output_text(transcript, json.dumps(data, indent=2, ensure_ascii=False) + "\n", "--transcript")
    if as_json:
        emit_json(data)
    else:
        for c in tr.tool_calls:
            err_console.print(_fmt_call(c), highlight=False, markup=False)
        if tr.answer is not None:
            typer.echo(tr.answer)
    if tr.status != "answered":
        last = tr.steps[-1] if tr.steps else None
        why = (f"the model's tool call did not parse ({last.parse_error['message']})"
               if tr.status == "parse_error" and last and last.parse_error
               else f"no answer after {max_steps} step(s)")
        if not as_json:
            err_console.print(f"agent stopped: {why}", highlight=False, markup=False)
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("agent")(agent)
