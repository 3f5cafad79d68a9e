"""Run by ``torchrun`` from tests/test_distributed.py: ``gags distill`` with a loss curve and faults.

    torchrun --standalone --nproc-per-node 2 tests/distributed_worker.py RUN --iterations 16 \
        [--checkpoint-every 8] [--resume] [--interrupt-at K] [--curve out.json]

``--curve``: rank 0 writes the per-step loss averaged over the ranks' views (one all-reduce per
step). ``--interrupt-at K``: every rank raises KeyboardInterrupt at its K-th render (a crash after
the last checkpoint); the worker then reports what the crash left and runs again with ``--resume``
(in the same processes, to spare a second start of torchrun).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import gags.distill.train as train_module
import gags.stages.distill as distill_stage
from gags import distributed as dist


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run", type=Path)
    parser.add_argument("--iterations", type=int, default=16)
    parser.add_argument("--checkpoint-every", type=int, default=0)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--interrupt-at", type=int, default=0)
    parser.add_argument("--curve", type=Path, default=None)
    parser.add_argument("--backend", default="dense")
    args = parser.parse_args()

    curve: list[float] = []
    real_train = distill_stage.train_field

    def train_with_curve(*a, **k):
        def log(step: int, stats: dict[str, float]) -> None:
            mean = dist.all_reduce(torch.tensor([stats["loss"]], dtype=torch.float64), "mean")
            curve.append(float(mean))

        return real_train(*a, log=log, **k)

    distill_stage.train_field = train_with_curve
    if args.interrupt_at:
        real_render, calls = train_module.render_field, [0]

        def render(*a, **k):
            calls[0] += 1
            if calls[0] == args.interrupt_at:
                raise KeyboardInterrupt(f"planted crash at render {calls[0]}")
            return real_render(*a, **k)

        train_module.render_field = render

    def run(resume: bool) -> dict:
        return distill_stage.distill(
            distill_stage.DistillConfig(
                run=args.run,
                iterations=args.iterations,
                checkpoint_every=args.checkpoint_every,
                resume=resume,
                progress=False,
                backend=args.backend,
                device="cpu",
            )
        )

    crash: dict = {}
    if args.interrupt_at:
        try:
            run(args.resume)
            raise AssertionError("the planted crash did not happen")
        except KeyboardInterrupt:
            ckpt = args.run / "checkpoints" / "distill.pt"
            crash = {
                "crash_language_exists": (args.run / "language.pt").exists(),
                "crash_checkpoint_step": int(torch.load(ckpt, weights_only=True)["step"]),
            }
        dist.barrier()
        train_module.render_field = real_render
        stats = {**run(True), **crash}
    else:
        stats = run(args.resume)
    if dist.is_main():
        print(json.dumps({k: v for k, v in stats.items() if isinstance(v, int | float | str)}))
        if args.curve is not None:
            args.curve.write_text(json.dumps(curve))


if __name__ == "__main__":
    main()
