"""Small pieces shared by converters, sdk_tools and on_device: the user-error type, atomic writes,
file hashing and device-shell quoting. Depends on nothing but the standard library."""
