"""Child process of the emulator's runner: loads the model with LiteRT-LM on the host CPU and
prints the runner contract's lines. The job comes in the GEMMA4_MOBILE_RUNNER_JOB environment variable."""

from __future__ import annotations

import json
import os
import sys

from on_device.runner_contract import EXIT_RUNTIME_ERROR, RunnerResult, format_result


def main() -> int:
    job = json.loads(os.environ["GEMMA4_MOBILE_RUNNER_JOB"])
    from gemma4_common.gemma4_format import STOP_SEQUENCES
    from on_device.engine import NO_CACHE, HostEngine, benchmark, peak_rss_mb
    from gemma4_common.errors import UserError

    res = RunnerResult()
    try:
        if job["benchmark"]:
            st = benchmark(job["model"], job["prefill_tokens"] or 256, job["decode_tokens"] or 128,
                           threads=job["threads"], max_num_tokens=job["max_num_tokens"],
                           cache_dir=job.get("cache_dir", NO_CACHE))
            res.init_s, res.ttft_s, res.prefill_tps, res.decode_tps = (st.init_s, st.ttft_s, st.prefill_tps,
                                                                       st.decode_tps)
        if job["input_prompt"] is not None:
            with HostEngine(job["model"], threads=job["threads"], max_num_tokens=job["max_num_tokens"],
                            cache_dir=job.get("cache_dir", NO_CACHE)) as eng:
                prompt = job["input_prompt"]
                if job.get("apply_prompt_template", True):
                    from gemma4_common.gemma4_format import Message, render_prompt

                    prompt = render_prompt([Message("user", prompt)], add_bos=False)
                g = eng.generate(prompt, max_new_tokens=job.get("max_output_tokens") or 128,
                                 stop=STOP_SEQUENCES, seed=job["seed"])
                res.response = g.text
                if not job["benchmark"]:
                    s = g.stats
                    res.init_s, res.ttft_s, res.prefill_tps, res.decode_tps = (s.init_s, s.ttft_s, s.prefill_tps,
                                                                               s.decode_tps)
    except UserError as e:
        print(f"litert_lm_main: ERROR: {e.one_line()}", file=sys.stderr)
        return EXIT_RUNTIME_ERROR
    except Exception as e:  # the engine's own failures, reported as the phone binary would
        print(f"litert_lm_main: ERROR: INTERNAL: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_RUNTIME_ERROR
    if job["report_peak_memory"]:
        res.peak_mem_mb = peak_rss_mb()
    sys.stdout.write(format_result(res))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
