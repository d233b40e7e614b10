"""Open a bundle as a text engine, on the host or on a device: the one way the agent, verify and
the demo get "a model that answers prompts". On the host it is LiteRT-LM's CPU engine; on a
device the bundle is deployed (skipping what is there already) and each generation is one run of
the device runner (the runner contract)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator, Union

from gemma4_common.errors import UserError
from gemma4_common.progress import Progress
from on_device.agent.host import HostTextEngine, RunnerTextEngine
from sdk_tools.deploy import Deployment
from sdk_tools.devices.base import Device

TextEngine = Union[HostTextEngine, RunnerTextEngine]


def bundle_manifest(bundle: Path | str, *, verify: bool) -> dict:
    """The bundle's manifest; with `verify`, after checking every file's sha256 against it (on the
    host path nothing else would; a deployment proves the bytes on the device instead)."""
    from converters.bundle import read_manifest, require_verified

    if not (Path(bundle) / "manifest.json").is_file():
        raise UserError(f"{bundle} is not a bundle directory (no manifest.json)",
                        "pass a directory made by `gemma4-mobile convert`")
    return require_verified(bundle) if verify else read_manifest(bundle)


@contextlib.contextmanager
def open_text_engine(bundle: Path | str, device: Device | None = None, *, runner: Path | None = None,
                     deployment: Deployment | None = None, backend: str | None = "cpu",
                     dispatch_libs: Path | None = None, threads: int | None = None, seed: int | None = None,
                     timeout_s: float | None = None, progress: Progress | None = None) -> Iterator[TextEngine]:
    """A TextEngine + Scorer for `bundle`: the host engine when `device` is None, else the bundle on
    `device` (deployed with `runner` unless `deployment` says where it already is; the engine's
    `.deployment` tells), one runner call per generation."""
    bundle = Path(bundle)
    manifest = bundle_manifest(bundle, verify=device is None)
    cache = (manifest.get("export") or {}).get("cache_length")
    if device is None:
        with HostTextEngine.open(bundle / manifest["main_model"], threads=threads, max_num_tokens=cache,
                                 seed=seed) as eng:
            yield eng
        return
    from sdk_tools.bench import run_runner
    from sdk_tools.deploy import RUNNER_HELP, deploy

    if deployment is None:
        if runner is None:
            raise UserError("running the model on a device needs a device runner (litert_lm_main)", RUNNER_HELP)
        deployment = deploy(device, bundle, runner=runner, dispatch_lib_dir=dispatch_libs, backend=backend,
                            progress=progress)
    dep = deployment
    eng = RunnerTextEngine(lambda inv: run_runner(device, dep, inv, timeout_s=timeout_s), str(dep.model_path),
                           backend=dep.backend, max_num_tokens=cache, num_threads=threads,
                           dispatch_lib_dir=str(dep.dispatch_dir) if dep.dispatch_dir else None, seed=seed)
    eng.deployment = dep
    yield eng
