"""Checks of values a user passes (token counts, context lengths, ports, HOST:PORT serials, text),
shared by every command that takes them so that each is refused the same way, with one UserError."""

from __future__ import annotations

from typing import Sequence

from gemma4_common.errors import UserError

# No Gemma 4 model has more positions than this; a context above it is a typo (10**12), not a plan.
ABSOLUTE_MAX_CONTEXT = 1 << 20


def positive(value: int | None, flag: str, *, example: int | str = 1, allow_none: bool = True) -> int | None:
    """`value` when it is at least 1 (None passes when allow_none): `--max-tokens 0` is refused."""
    if value is None and allow_none:
        return None
    if value is None or value < 1:
        raise UserError(f"{flag} must be at least 1 (got {value})", f"pass e.g. {flag} {example}")
    return value


def check_lengths(prefill_lengths: Sequence[int], context_lengths: Sequence[int], *,
                  ring_buffer: int | None = None, window: int = 0, max_context: int | None = None,
                  prefill_flag: str = "--prefill", context_flag: str = "--cache-length",
                  ring_flag: str = "--sliding-window-ring-buffer") -> None:
    """The token lengths of a conversion or a plan: prefill chunks of at least 1 token that fit the
    shortest context, contexts from 1 to the model's positions (`max_context`, when known), and a
    sliding-window ring buffer that holds the window plus one prefill chunk."""
    if not prefill_lengths or any(p <= 0 for p in prefill_lengths):
        bad = next((p for p in prefill_lengths if p <= 0), "nothing")
        raise UserError(f"{prefill_flag} must be a positive number of tokens (got {bad})",
                        f"pass e.g. {prefill_flag} 128")
    if not context_lengths or any(c <= 0 for c in context_lengths):
        bad = next((c for c in context_lengths if c <= 0), "nothing")
        raise UserError(f"{context_flag} must be a positive number of tokens (got {bad})",
                        f"pass e.g. {context_flag} 1024")
    limit = min(max_context or ABSOLUTE_MAX_CONTEXT, ABSOLUTE_MAX_CONTEXT)
    longest = max(context_lengths)
    if longest > limit:
        why = f"the model has {limit} positions" if max_context and max_context <= ABSOLUTE_MAX_CONTEXT \
            else f"the most any Gemma 4 model takes is {limit}"
        raise UserError(f"{context_flag} {longest} is too long ({why})", f"pass {context_flag} {limit} or less")
    shortest = min(context_lengths)
    too_long = [p for p in prefill_lengths if p > shortest]
    if too_long:
        raise UserError(f"prefill length {too_long[0]} is larger than the cache length {shortest}",
                        f"use a prefill length <= {context_flag}, or a longer cache")
    if ring_buffer is not None:
        if ring_buffer <= 0:
            raise UserError(f"{ring_flag} must be a positive number of tokens (got {ring_buffer})",
                            f"pass e.g. {ring_flag} 1024, or omit it")
        need = window + max(prefill_lengths)
        if ring_buffer < need:
            raise UserError(f"ring-buffer size {ring_buffer} is smaller than the sliding window {window} plus the "
                            f"prefill length {max(prefill_lengths)}", f"pass {ring_flag} {need} or more")


def check_port(port: int, flag: str = "--port", *, allow_zero: bool = False) -> int:
    """A TCP port: 1-65535 (0 too where it means 'pick a free one')."""
    low = 0 if allow_zero else 1
    if not low <= port <= 65535:
        raise UserError(f"{flag} {port} is not a TCP port ({low}-65535)",
                        f"pass {flag} " + ("0 (any free port) or " if allow_zero else "") + "a port such as 40123")
    return port


def host_port(serial: str, flag: str = "--connect") -> str:
    """`HOST:PORT` of a device over TCP (e.g. 127.0.0.1:40123 or [::1]:40123), stripped."""
    s = serial.strip()
    host, sep, port = s.rpartition(":")
    fix = f"pass {flag} HOST:PORT, e.g. {flag} 127.0.0.1:5555"
    if not sep or not host or any(c.isspace() for c in s) or not port.isdigit():
        raise UserError(f"{flag} {serial!r} is not HOST:PORT", fix)
    if host.startswith("[") != host.endswith("]") or ((":" in host) and not host.startswith("[")):
        raise UserError(f"{flag} {serial!r} is not HOST:PORT (an IPv6 host goes in brackets)", fix)
    if not 1 <= int(port) <= 65535:
        raise UserError(f"{flag} {serial!r} has port {int(port)}, outside 1-65535", fix)
    return s


def text(value: str, what: str) -> str:
    """`value` when it is valid Unicode text; lone surrogates (bytes that were not UTF-8, e.g. in
    argv or a file read with surrogateescape) are refused instead of failing inside the engine."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        bad = value[e.start:e.end]
        try:
            shown = repr(bad.encode("utf-8", "surrogateescape"))  # the bytes argv or a file really held
        except UnicodeEncodeError:
            shown = ascii(bad)
        raise UserError(f"{what} is not valid UTF-8 ({shown} at character {e.start})",
                        "pass UTF-8 text (re-save the file as UTF-8, or check the terminal's encoding)") from None
    return value
