"""Evaluation reports: ``metrics.json``, a markdown table and a bar chart, written atomically."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from gags.io import atomic_path, write_json_atomic, write_text_atomic
from gags.models.segmenter import LEVELS

#: level name used for categories that no category-to-level file assigns
UNASSIGNED = "unassigned"


def write_report(folder: Path, metrics: dict[str, Any]) -> dict[str, Path]:
    """Write ``metrics.json``, ``metrics.md`` and ``figure.png`` into ``folder``; return their paths."""
    paths = {
        "json": folder / "metrics.json",
        "markdown": folder / "metrics.md",
        "figure": folder / "figure.png",
    }
    write_json_atomic(paths["json"], _finite(metrics))
    write_text_atomic(paths["markdown"], markdown_table(metrics))
    save_figure(paths["figure"], metrics)
    return paths


def level_rows(metrics: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(name, {miou, macc, pairs}) rows: subpart, part, whole (those present), others, then overall."""
    by_level = metrics["by_level"]
    order = [lv for lv in LEVELS if lv in by_level] + sorted(k for k in by_level if k not in LEVELS)
    return [(name, by_level[name]) for name in order] + [("overall", metrics["overall"])]


def markdown_table(metrics: dict[str, Any]) -> str:
    """The per-granularity table (mIoU and mAcc in %) and a per-category table, as markdown."""
    lines = [
        f"# Open-vocabulary evaluation: {metrics.get('method', '?')}",
        "",
        f"{metrics['frames']} frames, {metrics['overall']['pairs']} (frame, query) pairs, "
        f"mask threshold {metrics['threshold']}; labels `{metrics['labels']}`.",
        "",
        "| granularity | pairs | mIoU (%) | mAcc (%) |",
        "|---|---:|---:|---:|",
    ]
    for name, row in level_rows(metrics):
        label = f"**{name}**" if name == "overall" else name
        lines.append(f"| {label} | {row['pairs']} | {_pct(row['miou'])} | {_pct(row['macc'])} |")
    lines += ["", "| category | granularity | pairs | mIoU (%) | mAcc (%) |", "|---|---|---:|---:|---:|"]
    for name, row in sorted(metrics["by_category"].items()):
        lines.append(
            f"| {name} | {row['level']} | {row['pairs']} | {_pct(row['miou'])} | {_pct(row['macc'])} |"
        )
    return "\n".join(lines) + "\n"


def save_figure(path: Path, metrics: dict[str, Any]) -> None:
    """Grouped bars of mIoU and mAcc (%) per granularity and overall, saved as a PNG (atomic)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = level_rows(metrics)
    names = [f"{n}\n({r['pairs']})" for n, r in rows]
    miou = [_num(r["miou"]) * 100 for _, r in rows]
    macc = [_num(r["macc"]) * 100 for _, r in rows]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(1.6 * len(rows) + 2, 3.6), dpi=120)
    try:
        for offset, values, label in ((-0.2, miou, "mIoU"), (0.2, macc, "mAcc")):
            bars = ax.bar(x + offset, values, width=0.4, label=label)
            ax.bar_label(bars, fmt="%.1f", fontsize=8)
        ax.set_xticks(x, names)
        ax.set_ylim(0, 105)
        ax.set_ylabel("%")
        ax.set_title(f"{metrics.get('method', '?')}: LERF-OVS protocol by granularity (pairs)")
        ax.legend(loc="upper left", fontsize=8)
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)


def _pct(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{100 * value:.1f}"


def _num(value: float | None) -> float:
    return 0.0 if value is None or math.isnan(value) else float(value)


def _finite(obj: Any) -> Any:
    """Replace NaN floats by None so that the JSON is standard (null)."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj
