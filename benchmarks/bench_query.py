"""Query latency per view: GAGS (one render + one decode) against LangSplat-style (three of each).

Both fields sit on the same random splats and use the same renderer backend, the same relevance code
and random weights (timing does not depend on trained values). For each view, in interleaved order,
one full query is timed: render the low-dimensional field(s), decode to the embedding space,
LERF relevance against the query and the canonical negatives; then (reported separately) the
LangSplat/GAGS post-processing (box smoothing, level choice, mask, point). Prints JSON with the
median seconds per view of each stage and the ratio LangSplat / GAGS (paper: about 2x).

    python benchmarks/bench_query.py [--gaussians 20000] [--width 256 --height 192] [--views 5]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time

import torch

from gags.distill.autoencoder import autoencoder_config
from gags.distill.decoders import build_decoder, decoder_config
from gags.distill.field import LanguageField
from gags.models.segmenter import LEVELS
from gags.query.postprocess import postprocess
from gags.query.relevance import relevance
from gags.splats.gaussians import Gaussians


def random_splats(n: int, device: torch.device, seed: int = 0) -> Gaussians:
    """``n`` Gaussians in a 2 x 2 x 2 box around the origin, small and fairly opaque."""
    g = torch.Generator().manual_seed(seed)
    return Gaussians(
        means=(torch.rand(n, 3, generator=g) * 2 - 1),
        quats=torch.nn.functional.normalize(torch.randn(n, 4, generator=g), dim=-1),
        log_scales=torch.log(torch.rand(n, 3, generator=g) * 0.03 + 0.01),
        opacity_logits=torch.randn(n, generator=g) + 1.0,
        sh=torch.rand(n, 1, 3, generator=g),
    ).to(device)


def orbit_cameras(
    views: int, width: int, height: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(C, 4, 4) world-to-camera matrices on a circle of radius 3 looking at the origin; (C, 3, 3) Ks."""
    mats = []
    for k in range(views):
        a = 2 * math.pi * k / views
        eye = torch.tensor([3 * math.cos(a), 3 * math.sin(a), 0.8])
        forward = -eye / eye.norm()
        right = torch.linalg.cross(forward, torch.tensor([0.0, 0.0, 1.0]))
        right = right / right.norm()
        down = torch.linalg.cross(forward, right)
        R = torch.stack([right, down, forward])  # rows: camera axes in world
        m = torch.eye(4)
        m[:3, :3], m[:3, 3] = R, -R @ eye
        mats.append(m)
    f = 0.9 * width
    K = torch.tensor([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1.0]])
    return torch.stack(mats).to(device), K.expand(views, 3, 3).contiguous().to(device)


def build_fields(gaussians: Gaussians, embed_dim: int, seed: int = 0) -> dict[str, LanguageField]:
    """A GAGS field (16-d, MLP decoder) and a LangSplat field (3 x 3-d, autoencoder decoder)."""
    torch.manual_seed(seed)
    n, device = len(gaussians), gaussians.device
    gags_cfg = decoder_config("reference-two-nets", embed_dim)
    ls_cfg = autoencoder_config(embed_dim)
    common = dict(gaussians=gaussians, embed_dim=embed_dim, encoder={}, payload={})
    return {
        "gags": LanguageField(
            fields=[torch.randn(n, 16, device=device)],
            decoder=build_decoder(gags_cfg).to(device).eval(),
            method="gags",
            levels=("gags",),
            **common,
        ),
        "langsplat": LanguageField(
            fields=[torch.nn.functional.normalize(torch.randn(n, 3, device=device), dim=-1) for _ in LEVELS],
            decoder=build_decoder(ls_cfg).to(device).eval(),
            method="langsplat",
            levels=LEVELS,
            **common,
        ),
    }


def _now(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


@torch.no_grad()
def time_query(
    field: LanguageField, viewmat, K, width, height, q, negatives, backend: str
) -> dict[str, float]:
    """Seconds of each stage of one query in one view."""
    device = q.device
    t0 = _now(device)
    low = field.render_low_dim(viewmat, K, width, height, backend=backend)
    t1 = _now(device)
    maps = [field.decode(m) for m in low]
    t2 = _now(device)
    rel = torch.stack([relevance(m[0], q, negatives) for m in maps])  # (L, H, W)
    t3 = _now(device)
    postprocess(rel.cpu())
    t4 = _now(device)
    return {
        "render": t1 - t0,
        "decode": t2 - t1,
        "relevance": t3 - t2,
        "query": t3 - t0,
        "postprocess": t4 - t3,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gaussians", type=int, default=20000)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--height", type=int, default=192)
    parser.add_argument("--views", type=int, default=5)
    parser.add_argument("--embed-dim", type=int, default=512)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--figure", default=None, help="also save a stacked-bar PNG of the stage times here")
    args = parser.parse_args()

    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    gaussians = random_splats(args.gaussians, device)
    fields = build_fields(gaussians, args.embed_dim)
    viewmats, Ks = orbit_cameras(args.views + 1, args.width, args.height, device)
    q = torch.nn.functional.normalize(torch.randn(args.embed_dim, device=device), dim=0)
    negatives = torch.nn.functional.normalize(torch.randn(4, args.embed_dim, device=device), dim=-1)

    times: dict[str, list[dict[str, float]]] = {name: [] for name in fields}
    for v in range(args.views + 1):  # view 0 is a warm-up for both
        for name, field in fields.items():  # interleaved, so background load hits both alike
            t = time_query(
                field, viewmats[v : v + 1], Ks[v : v + 1], args.width, args.height, q, negatives, args.backend
            )
            if v > 0:
                times[name].append(t)

    median = {
        name: {stage: statistics.median(t[stage] for t in runs) for stage in runs[0]}
        for name, runs in times.items()
    }
    report = {
        "benchmark": "query_latency_per_view",
        "device": str(device),
        "backend": args.backend,
        "gaussians": args.gaussians,
        "width": args.width,
        "height": args.height,
        "embed_dim": args.embed_dim,
        "views": args.views,
        "median_seconds": median,
        "ratio_langsplat_over_gags": median["langsplat"]["query"] / median["gags"]["query"],
        "ratio_with_postprocess": (median["langsplat"]["query"] + median["langsplat"]["postprocess"])
        / (median["gags"]["query"] + median["gags"]["postprocess"]),
        "note": "query = render + decode + relevance; postprocess = box smoothing, level choice, mask, point",
    }
    print(json.dumps(report, indent=2))
    if args.figure:
        save_figure(args.figure, report)


def save_figure(path: str, report: dict) -> None:
    """Stacked bars of the median stage times per view, GAGS against LangSplat, with the ratio."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gags.io import atomic_path

    stages = ("render", "decode", "relevance", "postprocess")
    names = list(report["median_seconds"])
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=120)
    bottom = [0.0] * len(names)
    for stage in stages:
        values = [1000 * report["median_seconds"][n][stage] for n in names]
        ax.bar(names, values, bottom=bottom, label=stage)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set_ylabel("ms per view (median)")
    ax.set_title(
        f"query latency, {report['gaussians']} Gaussians, {report['width']}x{report['height']}, "
        f"{report['device']}: {report['ratio_langsplat_over_gags']:.2f}x",
        fontsize=8,
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


if __name__ == "__main__":
    main()
