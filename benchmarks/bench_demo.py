"""End-to-end ``gags demo`` time on the built-in synthetic scene; prints JSON.

    python benchmarks/bench_demo.py            # the default demo (about 60 views at 200x150)
    python benchmarks/bench_demo.py --small    # the reduced size the tests use

The scene is generated into a fresh cache folder so its generation is timed too (``--cached``
reuses ``~/.cache/gags/synthetic``). Times are wall-clock seconds of each stage on this machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="the reduced size of tests/test_demo.py")
    parser.add_argument("--cached", action="store_true", help="reuse the default scene cache")
    args = parser.parse_args()

    import torch

    from gags.stages.demo import DemoConfig, run_demo

    with tempfile.TemporaryDirectory() as tmp:
        options: dict = {} if args.cached else {"cache_dir": Path(tmp) / "cache"}
        make = DemoConfig.reduced if args.small else DemoConfig
        cfg = make(out=Path(tmp) / "run", **options)
        start = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):  # stdout carries only the JSON
            result = run_demo(cfg)
        total = time.perf_counter() - start
        n_views = cfg.n_far + cfg.n_mid + 7 * cfg.near_per_object
    report = {
        "benchmark": "demo",
        "size": "small" if args.small else "default",
        "views": n_views,
        "image": [cfg.width, cfg.height],
        "seconds_total": round(total, 2),
        "seconds_by_stage": {k: round(v, 2) for k, v in result["timings"].items()},
        "eval_overall": result.get("eval", {}).get("overall"),
        "eval_by_level": result.get("eval", {}).get("by_level"),
        "segment_level_agreement": result.get("segments"),
        "rgb": result.get("rgb"),
        "torch_threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
