"""Host tooling: the `gemma4-mobile` CLI and host-side device work (ADB, deploy, bench, reports)."""
