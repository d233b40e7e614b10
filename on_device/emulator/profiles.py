"""Device profiles: what a virtual phone reports (getprop values, RAM, storage, CPUs, mounts, NPU).

Profiles live as JSON files in `on_device/profiles/`; `load_profile(name)` and `list_profiles()` are
the API the rest of the project uses.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from gemma4_common.errors import UserError
from gemma4_common.fsutil import read_json

PROFILES_DIR = Path(__file__).resolve().parent.parent / "profiles"

# Mount modes: "rw" writable by the shell user, "ro" readable only, "x" traversable but not listable
# (as /data is for the shell user on a real phone).
MOUNT_MODES = ("rw", "ro", "x")


@dataclass
class DeviceProfile:
    name: str
    props: dict[str, str]
    ram_bytes: int
    ram_budget_bytes: int
    storage_bytes: int
    cpu_count: int
    mounts: dict[str, str] = field(default_factory=dict)
    npu: str | None = None
    description: str = ""
    kernel_release: str = "6.1.25-android14-11-g0000000000a0-ab00000000"
    cpu_hardware: str = ""

    @property
    def model(self) -> str:
        return self.props.get("ro.product.model", self.name)

    @property
    def soc_model(self) -> str:
        return self.props.get("ro.soc.model", "")

    def with_overrides(self, **changes) -> "DeviceProfile":
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def list_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILES_DIR.glob("*.json"))


def _from_dict(data: dict, source: str) -> DeviceProfile:
    names = {f.name for f in dataclasses.fields(DeviceProfile)}
    unknown = set(data) - names
    if unknown:
        raise UserError(f"device profile {source} has unknown fields {sorted(unknown)}",
                        f"use only {sorted(names)}")
    try:
        prof = DeviceProfile(**data)
    except TypeError as e:
        raise UserError(f"device profile {source} is incomplete: {e}", "compare it with galaxy-s24.json")
    for path, mode in prof.mounts.items():
        if not path.startswith("/") or mode not in MOUNT_MODES:
            raise UserError(f"device profile {source}: mount {path!r}: {mode!r}",
                            f"mount paths are absolute and modes are one of {MOUNT_MODES}")
    if prof.ram_budget_bytes > prof.ram_bytes or prof.storage_bytes <= 0 or prof.cpu_count <= 0:
        raise UserError(f"device profile {source} has inconsistent sizes",
                        "ram_budget_bytes <= ram_bytes, storage_bytes > 0, cpu_count > 0")
    return prof


def load_profile(name: str) -> DeviceProfile:
    """A profile by name (`galaxy-s24`) or by path to a JSON file."""
    path = Path(name)
    if not (path.suffix == ".json" and path.is_file()):
        path = PROFILES_DIR / f"{name}.json"
    if not path.is_file():
        raise UserError(f"unknown device profile {name!r}",
                        f"choose one of: {', '.join(list_profiles())}")
    data = read_json(path, "fix the device profile")
    return _from_dict(data, path.name)
