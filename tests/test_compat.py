"""The private details of pinned libraries that the code relies on, one test per compatibility
function (converters/compat.py, sdk_tools/devices/tcp.py). Each fails with the installed version
and the function to re-check when an upgrade changes what that function relies on.

Fenced elsewhere: converters.lean's model internals (tests/test_realsize.py::test_litert_torch_private_details),
adb-shell's AdbDevice._maxdata (tcp.negotiated_max_payload: tests/test_push_speed_paths.py),
litert-torch's NPU vendor settings and section defaults (tests/test_npu.py), ai-edge-quantizer's
recipe names (tests/test_recipes.py), typer's click classes (tests/test_cli_robustness.py)."""

from __future__ import annotations

import ast
import inspect
import textwrap
import types
from importlib.metadata import version


def _recheck(dist: str, where: str, what: str) -> str:
    return f"{dist} {version(dist)} changed {what}: re-check {where} for this version"


def _function_ast(fn) -> ast.FunctionDef:
    return ast.parse(textwrap.dedent(inspect.getsource(fn))).body[0]


# ---------------------------------------------------------------- litert-torch (converters/compat.py)


def test_litert_torch_stop_token_prefixes():
    from litert_torch.generative.export_hf.core import export_lib, exportable_module, litert_lm_builder

    from converters.compat import litert_torch_stop_token_prefixes

    why = _recheck("litert-torch", "converters/compat.py:litert_torch_stop_token_prefixes",
                   "how build_llm_metadata expands stop strings (litert_lm_builder._STOP_TOKEN_PREFIXES)")
    tokenizer = types.SimpleNamespace(bos_token=None, eos_token="<turn|>", chat_template=None)

    def stop_strings() -> set[str]:
        meta = litert_lm_builder.build_llm_metadata(
            source_model_artifacts=export_lib.SourceModelArtifacts(
                model=types.SimpleNamespace(generation_config=None), model_config=None, text_model_config=None,
                tokenizer=tokenizer),
            export_config=exportable_module.ExportableModuleConfig(model="x"),
            chat_templates=((None, None), (None, None), (None, None)),
            exported_model_artifacts=export_lib.ExportedModelArtifacts(),
            litert_lm_model_type_override="generic")
        return {t.token_str for t in meta.stop_tokens}

    assert isinstance(getattr(litert_lm_builder, "_STOP_TOKEN_PREFIXES", None), list), why
    saved = litert_lm_builder._STOP_TOKEN_PREFIXES
    assert {".<turn|>", "}<turn|>", "<turn|>"} <= stop_strings(), why
    with litert_torch_stop_token_prefixes([]):
        assert stop_strings() == {"<turn|>"}, why
    assert litert_lm_builder._STOP_TOKEN_PREFIXES is saved


def test_litert_torch_llm_export_tasks():
    from litert_torch.generative.export_hf import export as export_mod
    from litert_torch.generative.export_hf.core import export_lib

    from converters.compat import litert_torch_llm_export_tasks

    why = _recheck("litert-torch", "converters/compat.py:litert_torch_llm_export_tasks",
                   "the LLM task list of export_hf.export.export()")
    # The last `else:` of export()'s task chain is the LLM one; its appends in source order.
    node = next((n for n in ast.walk(_function_ast(export_mod.export))
                 if isinstance(n, ast.If) and "AUTOMATIC_SPEECH_RECOGNITION" in ast.unparse(n.test)), None)
    assert node is not None, why
    while len(node.orelse) == 1 and isinstance(node.orelse[0], ast.If):
        node = node.orelse[0]
    appends = sorted((c for stmt in node.orelse for c in ast.walk(stmt)
                      if isinstance(c, ast.Call) and ast.unparse(c.func) == "export_tasks.append"),
                     key=lambda c: (c.lineno, c.col_offset))
    assert [ast.unparse(c.args[0]) for c in appends] == [
        "export_lib.export_embedder_model", "export_lib.export_text_prefill_decode_model",
        "export_lib.aot_compile_model", "export_lib.export_auxiliary_model", "export_lib.export_additional_models",
        "export_lib.export_vision_encoder_models", "export_lib.export_audio_encoder_models_for_llm",
        "export_lib.export_tokenizer", "litert_lm_builder.package_model"], why

    every = types.SimpleNamespace(externalize_embedder=True, export_vision_encoder=True, export_audio_encoder=True)
    assert litert_torch_llm_export_tasks(every) == [
        export_lib.export_embedder_model, export_lib.export_text_prefill_decode_model,
        export_lib.export_additional_models, export_lib.export_vision_encoder_models,
        export_lib.export_audio_encoder_models_for_llm, export_lib.export_tokenizer]
    text = types.SimpleNamespace(externalize_embedder=False, export_vision_encoder=False, export_audio_encoder=False)
    assert litert_torch_llm_export_tasks(text) == [
        export_lib.export_text_prefill_decode_model, export_lib.export_additional_models, export_lib.export_tokenizer]


def test_litert_torch_load_model_settings():
    import torch
    from litert_torch.generative.export_hf.core import export_lib

    from converters.compat import LITERT_TORCH_ATTENTION, litert_torch_load_model_settings

    why = _recheck("litert-torch", "converters/compat.py:litert_torch_load_model_settings",
                   "what export_lib.load_model sets on the configs it loads")
    assert callable(getattr(export_lib, "load_model", None)), why
    assigned: dict[str, set[str]] = {}
    for n in ast.walk(_function_ast(export_lib.load_model)):
        if isinstance(n, ast.Assign):
            for t in n.targets:
                if isinstance(t, ast.Attribute):
                    assigned.setdefault(ast.unparse(t), set()).add(ast.unparse(n.value))
    want = {
        "config.allow_global_per_layer_attribute_access": "True",
        "config.text_config.allow_global_per_layer_attribute_access": "True",
        "config._attn_implementation": repr(LITERT_TORCH_ATTENTION),
        "config._experts_implementation": "export_config.moe_exports_implementation",
        "config.text_config._experts_implementation": "export_config.moe_exports_implementation",
        "subcfg.dtype": "torch.float32",
    }
    for target, value in want.items():
        assert value in assigned.get(target, set()), f"{why} ({target} = {value} is gone)"
    private = {t for t in assigned if t.startswith("config.") and "._" in t}
    assert private == {"config._attn_implementation", "config._experts_implementation",
                       "config.text_config._experts_implementation"}, f"{why} (private settings: {sorted(private)})"

    def cfg(**kw):
        return types.SimpleNamespace(allow_global_per_layer_attribute_access=False, **kw)

    config = cfg(text_config=cfg(dtype=torch.bfloat16), vision_config=None)
    litert_torch_load_model_settings(config, "eager")
    assert config._attn_implementation == LITERT_TORCH_ATTENTION
    assert config._experts_implementation == config.text_config._experts_implementation == "eager"
    assert config.allow_global_per_layer_attribute_access and config.text_config.allow_global_per_layer_attribute_access
    assert config.text_config.dtype == torch.float32


def test_litert_torch_converter_v2_supported():
    from converters.compat import litert_torch_converter_v2_supported

    try:
        supported = litert_torch_converter_v2_supported()
    except (ImportError, AttributeError) as e:
        raise AssertionError(_recheck("litert-torch", "converters/compat.py:litert_torch_converter_v2_supported",
                                      f"litert_torch._convert.converter_v2.is_supported ({e})")) from None
    assert isinstance(supported, bool)


# ---------------------------------------------------------------- adb-shell (sdk_tools/devices/tcp.py)


def test_adb_shell_checksum_is_looked_up_at_call_time():
    from adb_shell import adb_device, adb_message

    from sdk_tools.devices import tcp

    why = _recheck("adb_shell", "sdk_tools/devices/tcp.py:patch_adb_shell_checksum",
                   "how it computes packet checksums (module globals adb_message.checksum, adb_device.checksum)")
    assert adb_message.checksum is tcp._fast_checksum and adb_device.checksum is tcp._fast_checksum, why
    calls = []

    def spy(data):
        calls.append(bytes(data))
        return tcp._fast_checksum(data)

    tcp.patch_adb_shell_checksum(spy)
    try:
        adb_message.AdbMessage(b"WRTE", 1, 2, b"payload").pack()  # what it sends
    finally:
        tcp.patch_adb_shell_checksum(tcp._fast_checksum)
    assert calls == [b"payload"], why
    # What it receives: the packet reader calls adb_device's global `checksum`.
    reader = getattr(getattr(adb_device, "_AdbIOManager", None), "_read_packet_from_device", None)
    assert reader is not None and "checksum" in reader.__code__.co_names, why


def test_adb_shell_raw_service():
    from adb_shell.adb_device import AdbDevice

    why = _recheck("adb_shell", "sdk_tools/devices/tcp.py:adb_shell_raw_service", "AdbDevice._service")
    assert callable(getattr(AdbDevice, "_service", None)), why
    params = list(inspect.signature(AdbDevice._service).parameters)
    assert params == ["self", "service", "command", "transport_timeout_s", "read_timeout_s", "timeout_s", "decode"], why
    assert "_service" in AdbDevice.shell.__code__.co_names, why  # the path its public shell() takes


def test_adb_shell_signer_attributes(tmp_path):
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, utils

    from sdk_tools.devices.tcp import load_signer

    key = tmp_path / "adbkey"
    signer = load_signer(key)  # makes the key pair, then loads it without OpenSSL's check
    why = _recheck("adb_shell", "sdk_tools/devices/tcp.py:load_signer",
                   "the attributes CryptographySigner.Sign/GetPublicKey use (rsa_key, public_key)")
    assert signer.GetPublicKey() == (tmp_path / "adbkey.pub").read_bytes(), why
    token = bytes(range(20))  # adbd sends a 20-byte token: signed as a SHA-1 digest
    signature = signer.Sign(token)
    signer.rsa_key.public_key().verify(signature, token, padding.PKCS1v15(), utils.Prehashed(hashes.SHA1()))
