"""Run by ``torchrun`` from tests/test_distributed.py: ``gags distill`` with a loss curve and faults.

    torchrun --standalone --nproc-per-node 2 tests/distributed_worker.py RUN --iterations 16 \
        [--checkpoint-every 8] [--resume] [--interrupt-at K] [--curve out.json] [--lock-probe]

``--curve``: rank 0 writes the per-step loss averaged over every rank's views (the stage's curve).
``--interrupt-at K``: every rank raises KeyboardInterrupt at its K-th render (a crash after the last
checkpoint); the worker then reports what the crash left and runs again with ``--resume`` (in the
same processes, to spare a second start of torchrun). ``--lock-probe``: every rank only takes the
run folder's lock and prints, as one JSON line, whether it was refused and why.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import gags.stages.distill as distill_stage
from gags import distributed as dist
from gags.errors import GagsError
from gags.runfolder import RunFolder


def lock_probe(run: Path) -> None:
    try:
        with RunFolder(run).lock("distill"):
            refused = None
    except GagsError as e:
        refused = str(e)
    print(json.dumps({"rank": dist.rank(), "refused": refused}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run", type=Path)
    parser.add_argument("--iterations", type=int, default=16)
    parser.add_argument("--checkpoint-every", type=int, default=0)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--interrupt-at", type=int, default=0)
    parser.add_argument("--curve", type=Path, default=None)
    parser.add_argument("--backend", default="dense")
    parser.add_argument("--lock-probe", action="store_true")
    args = parser.parse_args()
    if args.lock_probe:
        lock_probe(args.run)
        return

    real_renderers, calls = distill_stage.view_renderers, [0]
    if args.interrupt_at:

        def counted(render):
            def inner(field):
                calls[0] += 1
                if calls[0] == args.interrupt_at:
                    raise KeyboardInterrupt(f"planted crash at render {calls[0]}")
                return render(field)

            return inner

        distill_stage.view_renderers = lambda *a, **k: [counted(r) for r in real_renderers(*a, **k)]

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
        distill_stage.view_renderers = real_renderers
        stats = {**run(True), **crash}
    else:
        stats = run(args.resume)
    if dist.is_main():
        print(json.dumps({k: v for k, v in stats.items() if isinstance(v, int | float | str)}))
        if args.curve is not None:
            args.curve.write_text(json.dumps([record["loss"] for record in stats["curve"]]))


if __name__ == "__main__":
    main()
