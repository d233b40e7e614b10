"""Wall time and peak RSS of `gemma4-mobile convert` against calling litert-torch's `export_hf`
directly on the same checkpoint and recipe(s), measured in the same run, each in its own process.

    .venv/bin/python benchmarks/convert.py [--model e2b-tiny] [--recipes dynamic_wi8_afp32,dynamic_wi4c_afp32]

One recipe compares like with like (convert adds validation, hashing, the manifest and the
process isolation); several recipes show the effect of exporting once and quantizing per recipe,
where the direct route has to export once per recipe.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

PY = sys.executable
DIRECT = """
import sys
from pathlib import Path
from converters.export import ExportOptions, export_reference
from converters.recipes import get_recipe
export_reference(Path(sys.argv[1]), Path(sys.argv[2]), ExportOptions(prefill_lengths=[128], cache_length=1024),
                 get_recipe(sys.argv[3]))
"""


WRAP = """
import resource, subprocess, sys, time
t0 = time.perf_counter()
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def measure(argv: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB of the largest process in its tree) of one command. A fresh
    wrapper process per command, because ru_maxrss of children is a running maximum."""
    out = subprocess.run([PY, "-c", WRAP, *argv], check=True, capture_output=True, text=True).stdout.split()
    return float(out[0]), float(out[1]) / 1024.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="e2b-tiny")
    ap.add_argument("--recipes", default="dynamic_wi8_afp32")
    args = ap.parse_args()
    from sdk_tools.tinymodels.build import build_tiny

    ckpt = build_tiny(args.model)
    recipes = [r for r in args.recipes.split(",") if r]
    exe = str(Path(PY).with_name("gemma4-mobile"))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        direct_wall, direct_rss = 0.0, 0.0
        for r in recipes:
            w, rss = measure([PY, "-c", DIRECT, str(ckpt), str(tmp / f"direct-{r}"), r])
            direct_wall += w
            direct_rss = max(direct_rss, rss)
        ours_wall, ours_rss = measure([exe, "convert", str(ckpt), "-o", str(tmp / "ours"),
                                       "--recipe", ",".join(recipes)])
    print(f"checkpoint {ckpt.name}, recipes {', '.join(recipes)}")
    print(f"litert-torch export_hf directly : {direct_wall:7.1f} s   peak RSS {direct_rss:7.0f} MiB"
          f"   ({len(recipes)} export{'s' if len(recipes) > 1 else ''})")
    print(f"gemma4-mobile convert           : {ours_wall:7.1f} s   peak RSS {ours_rss:7.0f} MiB   (1 export)")
    print(f"ratio convert / direct          : wall {ours_wall / direct_wall:.2f}x   "
          f"peak RSS {ours_rss / direct_rss:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
