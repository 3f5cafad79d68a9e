"""Distillation time and peak memory on the synthetic scene (GaD and the baselines); prints JSON.

    python benchmarks/bench_distill.py [--iterations 300] [--methods gags average langsplat]

Each method runs in its own process so that its peak resident memory (ru_maxrss) is its own.
The prepared scene (oracle segmenter and encoder, GaS prompts) is kept in ``--out`` and reused.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path


def run_one(run: Path, method: str, iterations: int, downscale: float) -> dict:
    """Distil ``method`` into ``run`` in this process; returns the timing and memory figures."""
    import torch

    from gags.baselines.methods import distill_method
    from gags.stages.distill import DistillConfig, distill

    before_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    stats = distill(
        DistillConfig(
            run=run,
            method=distill_method(method),
            iterations=iterations,
            downscale=downscale,
            progress=False,
            device="cpu",
        )
    )
    return {
        "method": method,
        "iterations": iterations,
        "seconds": round(stats["seconds"], 2),
        "ms_per_step": round(1000 * stats["seconds"] / iterations, 1),
        "peak_rss_mb": round(stats["peak_memory_mb"], 1),
        "rss_before_mb": round(before_mb, 1),
        "gaussians": stats["gaussians"],
        "views": stats["views"],
        "embed_dim": stats["embed_dim"],
        "torch_threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bench_distill"))
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--downscale", type=float, default=2.0)
    parser.add_argument("--methods", nargs="+", default=["gags", "average", "langsplat"])
    parser.add_argument(
        "--single", default=None, help=argparse.SUPPRESS
    )  # internal: one method, this process
    args = parser.parse_args()

    from gags.baselines.methods import MethodSpec
    from gags.stages.ablation import AblationConfig, method_folder, prepared_runs

    if args.single:
        run = args.out / args.single
        print(json.dumps(run_one(run, args.single, args.iterations, args.downscale)))
        return

    cfg = AblationConfig(out=args.out)
    _, preps = prepared_runs(cfg, {"gas"})
    rows = []
    for method in args.methods:
        method_folder(cfg, MethodSpec(method, "gas", method, method), preps["gas"])
        cmd = [
            sys.executable,
            __file__,
            "--out",
            str(args.out),
            "--iterations",
            str(args.iterations),
            "--downscale",
            str(args.downscale),
            "--single",
            method,
        ]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    print(
        json.dumps(
            {"benchmark": "distill", "scene": "synthetic 200x150 (oracle models)", "rows": rows}, indent=2
        )
    )


if __name__ == "__main__":
    main()
