"""What runs on or as a device: the runner contract, the reference emulator, the agent runtime.
Knows nothing of the host tooling (sdk_tools, converters)."""
