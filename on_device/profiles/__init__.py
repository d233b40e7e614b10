"""Device profiles for the reference emulator, one JSON file each (read by on_device.emulator.profiles).
A package only so that the JSON files ship with the project."""
