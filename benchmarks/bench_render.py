"""Render throughput of the portable tile backend; prints JSON.

Cases:
  random20k: 20,000 random Gaussians, one 256x192 camera, RGB.
  garden:    the real garden cloud (shared data ``garden_points/test_garden.npz``, 138,766 points, 3 cameras)
             at 1/4 of its camera resolution, initialised as 3DGS does (scale = RMS distance to the 3
             nearest neighbours, opacity 0.1), RGB.

Wall-clock and process-CPU times are both reported (CPU time is steadier when the machine is shared;
with one thread it is the single-core cost). Each case runs in its own subprocess so that its peak
resident memory (``ru_maxrss``) is its own.
Times are medians of ``--repeats`` runs after one warm-up; forward+backward backpropagates
``rgb.sum() + depth.mean()`` to every Gaussian parameter.

    python benchmarks/bench_render.py [--cases random20k garden] [--repeats 5] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

GARDEN = Path(__file__).resolve().parents[2] / "shared" / "data" / "garden_points" / "test_garden.npz"
CASES = ("random20k", "garden")


def _random_case():
    """20k Gaussians in front of one 256x192 camera."""
    from gags.splats.gaussians import Gaussians

    g = torch.Generator().manual_seed(0)
    n = 20_000
    means = (torch.rand(n, 3, generator=g) - 0.5) * torch.tensor([4.0, 3.0, 2.0]) + torch.tensor([0, 0, 4.0])
    gs = Gaussians(
        means=means,
        quats=torch.randn(n, 4, generator=g),
        log_scales=torch.log(torch.rand(n, 3, generator=g) * 0.04 + 0.005),
        opacity_logits=torch.randn(n, generator=g),
        sh=torch.rand(n, 1, 3, generator=g),
    )
    width, height = 256, 192
    Ks = torch.tensor([[[220.0, 0, width / 2], [0, 220.0, height / 2], [0, 0, 1]]])
    return gs, torch.eye(4)[None], Ks, width, height


def _garden_case():
    """The garden points as 3DGS initial Gaussians, 3 cameras at 1/4 resolution."""
    from gags.splats.init import from_points

    if not GARDEN.exists():
        return None
    data = np.load(GARDEN)
    gs = from_points(data["means3d"], data["colors"], sh_degree=0, init_opacity=0.1)
    Ks = torch.from_numpy(data["Ks"]).float().clone()
    Ks[:, :2] /= 4
    viewmats = torch.from_numpy(data["viewmats"]).float()
    return gs, viewmats, Ks, int(data["width"]) // 4, int(data["height"]) // 4


def _median_time(fn, repeats: int) -> tuple[float, float]:
    """Median wall-clock and process-CPU seconds of ``fn`` (CPU time is steadier on a shared machine)."""
    fn()  # warm-up
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def run_case(name: str, repeats: int, backend: str) -> dict:
    """Time one case in this process; see the module docstring."""
    from gags.splats import render as render_mod
    from gags.splats.backends import torch_tiles

    built = _random_case() if name == "random20k" else _garden_case()
    if built is None:
        return {"case": name, "skipped": f"{GARDEN} not found"}
    gs, viewmats, Ks, width, height = built
    params = [gs.means, gs.quats, gs.log_scales, gs.opacity_logits, gs.sh]
    for p in params:
        p.requires_grad_()

    def forward():
        with torch.no_grad():
            return render_mod.render(gs, viewmats, Ks, width, height, backend=backend)

    def forward_backward():
        out = render_mod.render(gs, viewmats, Ks, width, height, backend=backend)
        torch.autograd.grad(out.rgb.sum() + out.depth.mean(), params)

    t_fwd, cpu_fwd = _median_time(forward, repeats)
    t_fb, cpu_fb = _median_time(forward_backward, repeats)
    stats: dict = {}
    with torch.no_grad():
        proj = render_mod.project_gaussians(
            gs.means, gs.quats, gs.scales, gs.opacities, viewmats, Ks, width, height
        )
        values = torch.zeros(proj.depths.shape + (4,))
        torch_tiles.rasterize_tiles(proj, values, width, height, stats=stats)
    out = forward()
    return {
        "case": name,
        "backend": backend,
        "gaussians": len(gs),
        "cameras": int(viewmats.shape[0]),
        "width": width,
        "height": height,
        "threads": torch.get_num_threads(),
        "forward_s": round(t_fwd, 4),
        "forward_backward_s": round(t_fb, 4),
        "forward_cpu_s": round(cpu_fwd, 4),
        "forward_backward_cpu_s": round(cpu_fb, 4),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "tile_pairs": stats.get("pairs"),
        "pixel_gaussian_evaluated": stats.get("evaluated"),
        "evaluated_per_s_forward": round(stats["evaluated"] / t_fwd) if backend == "torch" else None,
        "mean_alpha": round(float(out.alpha.mean()), 4),
    }


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--backend", default="torch", choices=["torch", "dense"])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(run_case(args.cases[0], args.repeats, args.backend)))
        return
    results = []
    for case in args.cases:
        cmd = [sys.executable, __file__, "--child", "--cases", case, "--repeats", str(args.repeats)]
        cmd += ["--threads", str(args.threads), "--backend", args.backend]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print(json.dumps({"benchmark": "render", "results": results}, indent=2))


if __name__ == "__main__":
    main()
