"""`gemma4-mobile run BUNDLE --prompt ...`: generate on the host's LiteRT-LM CPU engine."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from sdk_tools.cli.common import emit_json
from sdk_tools.cli.options import JsonOption, VerboseOption


def run_cmd(
    bundle: Path = typer.Argument(..., help="Bundle directory made by `convert`."),
    prompt: str = typer.Option(..., "--prompt", "-p", help="User message (the Gemma 4 chat format is applied)."),
    system: Optional[str] = typer.Option(None, "--system", help="System instruction."),
    max_tokens: int = typer.Option(64, "--max-tokens", help="Most tokens to generate."),
    raw: bool = typer.Option(False, "--raw", help="Send the prompt as is, without the chat format."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads."),
    image: List[Path] = typer.Option([], "--image",
                                     help="Image file for the prompt (bundles converted with --vision)."),
    audio: List[Path] = typer.Option([], "--audio",
                                     help="Audio file (WAV) for the prompt (bundles converted with --audio)."),
    context: Optional[int] = typer.Option(None, "--context",
                                          help="Context to run with (default: the bundle's longest cache)."),
    as_json: JsonOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Generate greedily and print time to first token, prefill and decode tokens/s."""
    from converters.bundle import require_verified
    from gemma4_common.gemma4_format import STOP_SEQUENCES, Message, cut_at_stop, render_prompt
    from on_device.engine import HostEngine

    from gemma4_common import validate
    from gemma4_common.errors import UserError

    validate.positive(max_tokens, "--max-tokens", example=64)
    validate.positive(threads, "--threads", example=4)
    validate.positive(context, "--context", example=1024)
    validate.text(prompt, "--prompt")
    if system is not None:
        validate.text(system, "--system")
    m = require_verified(bundle)
    exp = m["export"]
    for flag, files, has in (("--image", image, exp.get("vision")), ("--audio", audio, exp.get("audio"))):
        if files and not has:
            raise UserError(f"bundle {bundle} has no {'vision' if flag == '--image' else 'audio'} encoder",
                            f"convert the checkpoint with {'--vision' if flag == '--image' else '--audio'}")
        for f in files:
            if not f.is_file():
                raise UserError(f"{flag} file {f} does not exist", f"pass an existing file to {flag}")
    longest = exp["cache_length"]
    if context is not None and context > longest:
        raise UserError(f"--context {context} is outside the bundle's cache (1..{longest})",
                        "convert with a longer --cache-length")
    ring = True if exp.get("sliding_window_ring_buffer_size") else None
    with HostEngine(bundle / m["main_model"], threads=threads, max_num_tokens=context or longest, ring_buffers=ring,
                    vision=bool(image), audio=bool(audio)) as eng:
        if image or audio:
            g = eng.chat(prompt, images=image, audios=audio, max_new_tokens=max_tokens, system=system)
        else:
            text = prompt if raw else render_prompt([Message("user", prompt)], system=system, add_bos=False)
            g = eng.generate(text, max_new_tokens=max_tokens, stop=STOP_SEQUENCES)
    answer = cut_at_stop(g.text)[0]
    st = g.stats
    if as_json:
        emit_json({"bundle": str(bundle), "prompt": prompt, "response": answer, "stopped_by": g.stopped_by,
                   "init_s": st.init_s, "ttft_s": st.ttft_s, "prefill_tokens": st.prefill_tokens,
                   "prefill_tps": st.prefill_tps, "decode_tokens": st.decode_tokens, "decode_tps": st.decode_tps})
        return
    typer.echo(answer)
    typer.echo(f"Time to first token: {st.ttft_s * 1000:.1f} ms | Prefill: {st.prefill_tps:.1f} tokens/s "
               f"({st.prefill_tokens} tokens) | Decode: {st.decode_tps:.1f} tokens/s ({st.decode_tokens} tokens) "
               f"| Init: {st.init_s * 1000:.1f} ms", err=True)


def register(app: typer.Typer) -> None:
    app.command("run")(run_cmd)
