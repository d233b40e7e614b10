"""Small pieces shared by converters, sdk_tools and on_device: the user-error type, atomic writes,
file hashing, device-shell quoting, validators and the Gemma 4 chat format (`gemma4_format`:
the agent, the tiny-model corpus and calibration render with it). Depends on nothing but the standard library."""
