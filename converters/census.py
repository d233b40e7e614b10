"""Op census of LiteRT models: ops by type and dtype per signature, and the float compute ops an NPU
that forbids float (Qualcomm HTP) would reject. Reads the flatbuffer lazily (no weights copied), from
a .tflite file or each TFLite section of a .litertlm."""

from __future__ import annotations

import mmap
from collections import Counter
from pathlib import Path
from typing import Any

# Graph-boundary conversions: float in or out by design (float embeddings in, float logits out).
BOUNDARY_OPS = {"QUANTIZE", "DEQUANTIZE"}
# Ops that move or select data without arithmetic; on float tensors they are float ops, but not
# float compute.
DATA_MOVEMENT_OPS = {
    "RESHAPE", "TRANSPOSE", "SLICE", "STRIDED_SLICE", "CONCATENATION", "GATHER", "GATHER_ND", "SQUEEZE",
    "EXPAND_DIMS", "PACK", "UNPACK", "SPLIT", "SPLIT_V", "BROADCAST_TO", "TILE", "PAD", "PADV2", "SHAPE",
    "DYNAMIC_UPDATE_SLICE", "SELECT", "SELECT_V2", "CAST", "IDENTITY", "REVERSE_V2", "SCATTER_ND",
}
_FLOAT_TYPES = {"FLOAT32", "FLOAT16", "BFLOAT16", "FLOAT64"}


def _enum_names(cls) -> dict[int, str]:
    return {v: k for k, v in vars(cls).items() if not k.startswith("_") and isinstance(v, int)}


def _schema():
    from ai_edge_litert import schema_py_generated as schema_fb

    return schema_fb


def _op_name(model, op, names: dict[int, str]) -> str:
    code = model.OperatorCodes(op.OpcodeIndex())
    builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
    name = names.get(builtin, f"OP_{builtin}")
    if name == "CUSTOM":
        custom = code.CustomCode()
        return f"CUSTOM:{custom.decode() if custom else '?'}"
    return name


def census_buffer(buf) -> dict[str, Any]:
    """{signature: {"ops": {"OP:dtype": n}, "float_ops": [...], "float_compute_ops": n, "total": n}}."""
    fb = _schema()
    model = fb.Model.GetRootAsModel(buf, 0)
    op_names, type_names = _enum_names(fb.BuiltinOperator), _enum_names(fb.TensorType)
    sigs = [(model.SignatureDefs(i).SignatureKey().decode(), model.SignatureDefs(i).SubgraphIndex())
            for i in range(model.SignatureDefsLength())]
    if not sigs:
        sigs = [(f"subgraph_{i}", i) for i in range(model.SubgraphsLength())]
    out: dict[str, Any] = {}
    for key, idx in sigs:
        sg = model.Subgraphs(idx)
        counts: Counter = Counter()
        float_ops: Counter = Counter()
        compute = 0
        for j in range(sg.OperatorsLength()):
            op = sg.Operators(j)
            name = _op_name(model, op, op_names)
            tensors = [sg.Tensors(t) for t in list(op.InputsAsNumpy() if op.InputsLength() else [])
                       + list(op.OutputsAsNumpy() if op.OutputsLength() else []) if t >= 0]
            dtypes = [type_names.get(t.Type(), "?") for t in tensors]
            outs = [type_names.get(sg.Tensors(t).Type(), "?") for t in (op.OutputsAsNumpy() if op.OutputsLength()
                                                                         else []) if t >= 0]
            counts[f"{name}:{(outs or dtypes or ['none'])[0]}"] += 1
            if name in BOUNDARY_OPS or not any(d in _FLOAT_TYPES for d in dtypes):
                continue
            float_ops[name] += 1
            if name not in DATA_MOVEMENT_OPS:
                compute += 1
        out[key] = {"total": sum(counts.values()), "ops": dict(sorted(counts.items())),
                    "float_ops": dict(sorted(float_ops.items())), "float_compute_ops": compute}
    return out


def census_tflite(path: Path | str) -> dict[str, Any]:
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        return census_buffer(mm)


def census_litertlm(path: Path | str) -> dict[str, dict[str, Any]]:
    """{section model_type (or index): census} for every TFLite section of a .litertlm."""
    from converters.bundle import litertlm_sections

    secs = litertlm_sections(path)["sections"]
    out = {}
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        for s in secs:
            if "tflite" not in str(s["data_type"]).lower():
                continue
            name = s.get("model_type") or f"section_{s['index']}"
            out[name] = census_buffer(memoryview(mm)[s["begin"]:s["end"]])
    return out


def census(path: Path | str) -> dict[str, Any]:
    path = Path(path)
    if path.suffix == ".litertlm":
        return census_litertlm(path)
    return {path.stem: census_tflite(path)}


def float_compute_ops(c: dict[str, Any], sections: tuple[str, ...] = ("tf_lite_prefill_decode",)) -> dict[str, int]:
    """Float compute ops per 'section/signature' of the given sections (by default the LLM's
    prefill/decode graph, what the vendors' no-float rule is about)."""
    return {f"{section}/{sig}": d["float_compute_ops"] for section, sigs in c.items() if section in sections
            for sig, d in sigs.items()}


def summary(c: dict[str, Any]) -> dict[str, Any]:
    """The manifest's compact form: per section and signature, op totals, float compute ops and the
    ops by type:dtype."""
    return {section: {sig: {"total": d["total"], "float_compute_ops": d["float_compute_ops"], "ops": d["ops"]}
                      for sig, d in sigs.items()} for section, sigs in c.items()}
