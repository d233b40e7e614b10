"""NPU SoC catalog: the Qualcomm and MediaTek SoCs we can AOT-compile for, keyed by what a phone reports
through getprop (`ro.soc.manufacturer`, `ro.soc.model`, `ro.board.platform`)."""

from __future__ import annotations

import dataclasses
import re
from typing import Mapping

from gemma4_common.errors import UserError

VENDORS: tuple[str, ...] = ("qualcomm", "mediatek")

# Human spellings of the vendor, as the CLI and `ro.soc.manufacturer` give them.
_VENDOR_ALIASES = {
    "qualcomm": "qualcomm",
    "qti": "qualcomm",
    "qcom": "qualcomm",
    "qualcomm technologies, inc": "qualcomm",
    "mediatek": "mediatek",
    "mtk": "mediatek",
}

# Host-side NeuroPilot SDK versions LiteRT knows (ai_edge_litert.aot.vendors.mediatek.target
# map_soc_to_np_version) and the compiler flag value each takes (--mediatek_sdk_version_type).
NEUROPILOT_SDK_VERSION_TYPE = {"v7": "version7", "v8": "version8", "v9": "version9"}


@dataclasses.dataclass(frozen=True)
class SocInfo:
    vendor: str  # "qualcomm" | "mediatek"
    model: str  # as ro.soc.model reports it and as LiteRT's SocModel enum spells it: "SM8650", "MT6989"
    marketing_name: str
    # Qualcomm: Hexagon HTP architecture ("v75"). MediaTek: NeuroPilot SDK version LiteRT compiles
    # with for this SoC ("v8", "v9").
    arch: str
    board_platforms: tuple[str, ...]  # ro.board.platform values, lower case
    npu_name: str  # the hardware block, for people ("Hexagon HTP v75", "APU 790")
    dispatch_libs: tuple[str, ...]  # device-side libraries the LiteRT NPU dispatch needs

    @property
    def key(self) -> str:
        """Directory-safe id: `qualcomm_SM8650`."""
        return f"{self.vendor}_{self.model}"

    @property
    def target(self) -> str:
        """CLI spelling: `qualcomm:SM8650`."""
        return f"{self.vendor}:{self.model}"

    @property
    def litert_manufacturer(self) -> str:
        """The SocManufacturer value LiteRT's AOT targets use."""
        return "Qualcomm" if self.vendor == "qualcomm" else "MediaTek"

    @property
    def compiler_soc_model(self) -> str:
        """What LiteRT's compiler plugins take as --soc_model (MediaTek wants it lower case)."""
        return self.model.lower() if self.vendor == "mediatek" else self.model

    def to_dict(self) -> dict:
        return {
            "vendor": self.vendor,
            "model": self.model,
            "marketing_name": self.marketing_name,
            "arch": self.arch,
            "npu": self.npu_name,
            "board_platforms": list(self.board_platforms),
            "dispatch_libs": list(self.dispatch_libs),
        }


def qualcomm_dispatch_libs(htp_arch: str) -> tuple[str, ...]:
    v = htp_arch.upper()  # "v75" -> "V75"
    return (
        "libLiteRtDispatch_Qualcomm.so",
        "libQnnHtp.so",
        f"libQnnHtp{v}Skel.so",
        f"libQnnHtp{v}Stub.so",
        "libQnnSystem.so",
    )


# The NeuroPilot runtime itself ships in the phone's vendor partition; only LiteRT's dispatch
# library has to be pushed.
MEDIATEK_DISPATCH_LIBS: tuple[str, ...] = ("libLiteRtDispatch_MediaTek.so",)


def _qc(model: str, name: str, htp: str, platforms: tuple[str, ...]) -> SocInfo:
    return SocInfo("qualcomm", model, name, htp, platforms, f"Hexagon HTP {htp}", qualcomm_dispatch_libs(htp))


def _mtk(model: str, name: str, np_version: str, apu: str) -> SocInfo:
    return SocInfo("mediatek", model, name, np_version, (model.lower(),), apu, MEDIATEK_DISPATCH_LIBS)


# Phone SoCs only; LiteRT's enums also list automotive parts (SA8255, SA8295) and SoCs whose NPU
# generation we have not confirmed (SM8845, MT6853, MT6877, MT6879, MT6886, MT8171, MT8188, MT8189).
_SOCS: tuple[SocInfo, ...] = (
    _qc("SM8350", "Snapdragon 888", "v68", ("lahaina",)),
    _qc("SM8450", "Snapdragon 8 Gen 1", "v69", ("taro",)),
    _qc("SM8475", "Snapdragon 8+ Gen 1", "v69", ("taro",)),
    _qc("SM8550", "Snapdragon 8 Gen 2", "v73", ("kalama",)),
    _qc("SM8650", "Snapdragon 8 Gen 3", "v75", ("pineapple",)),
    _qc("SM8750", "Snapdragon 8 Elite", "v79", ("sun",)),
    _qc("SM8850", "Snapdragon 8 Elite Gen 5", "v81", ("canoe",)),
    _mtk("MT6878", "Dimensity 7300", "v8", "APU 655"),
    _mtk("MT6893", "Dimensity 1200", "v8", "APU 3.0"),
    _mtk("MT6895", "Dimensity 8100", "v8", "APU 580"),
    _mtk("MT6897", "Dimensity 8300", "v8", "APU 780"),
    _mtk("MT6983", "Dimensity 9000", "v8", "APU 590"),
    _mtk("MT6985", "Dimensity 9200", "v8", "APU 690"),
    _mtk("MT6989", "Dimensity 9300", "v8", "APU 790"),
    _mtk("MT6991", "Dimensity 9400", "v8", "NPU 890"),
    _mtk("MT6993", "Dimensity 9500", "v9", "NPU 990"),
)

_BY_MODEL: dict[str, SocInfo] = {s.model: s for s in _SOCS}


def all_socs(vendor: str | None = None) -> list[SocInfo]:
    v = normalize_vendor(vendor) if vendor else None
    return [s for s in _SOCS if v is None or s.vendor == v]


def normalize_vendor(vendor: str) -> str:
    v = _VENDOR_ALIASES.get(vendor.strip().lower().rstrip("."))
    if v is None:
        raise UserError(
            f"unknown NPU vendor {vendor!r}",
            f"use one of: {', '.join(VENDORS)}",
        )
    return v


_MODEL_RE = re.compile(r"^\s*((?:SM|MT)\d{4})", re.IGNORECASE)


def _normalize_model(model: str) -> str:
    # Phones may add a bin suffix: "SM8750-AC", "SM8650-AB".
    m = _MODEL_RE.match(model)
    return m.group(1).upper() if m else model.strip().upper()


def _known_list(vendor: str | None = None) -> str:
    return ", ".join(f"{s.vendor}:{s.model} ({s.marketing_name})" for s in all_socs(vendor))


def get_soc(vendor: str | None, model: str) -> SocInfo:
    """The catalog entry for `model`; `vendor` (optional) must agree. UserError when unknown."""
    v = normalize_vendor(vendor) if vendor else None
    soc = _BY_MODEL.get(_normalize_model(model))
    if soc is None or (v is not None and soc.vendor != v):
        where = f"{v} " if v else ""
        raise UserError(
            f"unknown NPU SoC {where}{model!r}",
            f"known SoCs: {_known_list(v)}",
        )
    return soc


def parse_target(spec: str) -> SocInfo:
    """`qualcomm:SM8650` (or just `SM8650`) -> SocInfo."""
    vendor, sep, model = spec.strip().partition(":")
    if not sep:
        return get_soc(None, vendor)
    return get_soc(vendor, model)


def parse_targets(spec: str) -> list[SocInfo]:
    """`qualcomm:SM8650,mediatek:MT6991` -> [SocInfo, ...] without duplicates, in order."""
    out: list[SocInfo] = []
    for part in spec.split(","):
        if not part.strip():
            continue
        soc = parse_target(part)
        if soc not in out:
            out.append(soc)
    if not out:
        raise UserError("no NPU targets given", "pass e.g. --npu qualcomm:SM8650,mediatek:MT6991")
    return out


def lookup_soc(props: Mapping[str, str]) -> SocInfo | None:
    """The catalog entry for a device from its getprop values, or None if it has no NPU we target.

    `ro.soc.model` decides; `ro.board.platform` is the fallback for devices that predate the
    ro.soc.* properties (Android < 12). A platform shared by several SoCs (taro: SM8450 and SM8475)
    is ambiguous and gives None rather than a guess, since each SoC needs its own compiled model.
    """
    manufacturer = (props.get("ro.soc.manufacturer") or "").strip().lower().rstrip(".")
    vendor = _VENDOR_ALIASES.get(manufacturer)
    model = (props.get("ro.soc.model") or "").strip()
    if model:
        soc = _BY_MODEL.get(_normalize_model(model))
        if soc is not None:
            # SM#### / MT#### are vendor-unique; a manufacturer of ours that disagrees is suspect.
            return soc if vendor in (None, soc.vendor) else None
    platform = (props.get("ro.board.platform") or "").strip().lower()
    if platform:
        hits = [s for s in _SOCS if platform in s.board_platforms]
        if vendor is not None:
            hits = [s for s in hits if s.vendor == vendor]
        if len(hits) == 1:
            return hits[0]
    return None


def describe_device_soc(props: Mapping[str, str]) -> str:
    """A short description of what the device reports, for notices."""
    parts = [props.get("ro.soc.manufacturer", ""), props.get("ro.soc.model", "")]
    text = " ".join(p for p in parts if p).strip()
    platform = props.get("ro.board.platform", "")
    if platform:
        text = f"{text} (platform {platform})" if text else f"platform {platform}"
    return text or "unknown SoC"
