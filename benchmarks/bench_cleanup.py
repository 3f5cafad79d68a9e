"""Mask clean-up speed: vectorised ``mask_nms`` against the reference's pairwise loop. Prints JSON.

python benchmarks/bench_cleanup.py [--masks 300] [--height 378] [--width 504]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from gags.segment.cleanup import mask_nms, mask_nms_loop


def random_masks(n: int, h: int, w: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, h, w) bool ellipses of random size and place, scores in [0.6, 1]."""
    g = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    c = torch.rand(n, 2, generator=g) * torch.tensor([w, h])
    r = 5 + torch.rand(n, 2, generator=g) * torch.tensor([w, h]) / 4
    masks = ((xs - c[:, 0, None, None]) / r[:, 0, None, None]) ** 2 + (
        (ys - c[:, 1, None, None]) / r[:, 1, None, None]
    ) ** 2 <= 1
    return masks, 0.6 + 0.4 * torch.rand(n, generator=g)


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--masks", type=int, default=300)
    p.add_argument("--height", type=int, default=378)
    p.add_argument("--width", type=int, default=504)
    args = p.parse_args()
    masks, scores = random_masks(args.masks, args.height, args.width)
    fast = best_of(lambda: mask_nms(masks, scores), 3)
    slow = best_of(lambda: mask_nms_loop(masks, scores), 1)
    same = torch.equal(mask_nms(masks, scores), mask_nms_loop(masks, scores))
    print(
        json.dumps(
            {
                "masks": args.masks,
                "image": [args.width, args.height],
                "threads": torch.get_num_threads(),
                "vectorised_s": round(fast, 4),
                "loop_s": round(slow, 3),
                "speedup": round(slow / fast, 1),
                "identical_result": same,
                "kept": int(mask_nms(masks, scores).numel()),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
