"""Checkpoint -> export -> quantize -> NPU compile -> bundle. Never imports sdk_tools or on_device."""
