"""The reference emulator: a virtual Android device speaking ADB on a loopback port, running Android's
own userland (mksh + toybox) in a bubblewrap sandbox as uid shell, with a device profile and the
device-side runner contract."""

from .profiles import DeviceProfile, list_profiles, load_profile
from .server import FEATURES, EmulatorConfig, EmulatorServer

__all__ = ["DeviceProfile", "EmulatorConfig", "EmulatorServer", "FEATURES", "list_profiles", "load_profile"]
