"""``gags demo`` end to end at a reduced size: every stage runs and the report has metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gags.stages.demo import DemoConfig, run_demo


def test_demo_runs_end_to_end_and_reports_metrics(tmp_path, capsys):
    cfg = DemoConfig.reduced(tmp_path / "run", queries=("cup", "pencil"), cache_dir=tmp_path / "cache")
    result = run_demo(cfg)
    ev = tmp_path / "run" / "eval"
    for name in ("metrics.json", "demo.json", "demo.md", "demo_figure.png", "distill_curves.png"):
        assert (ev / name).stat().st_size > 0, name
    metrics = json.loads((ev / "metrics.json").read_text())
    overall = metrics["overall"]  # LERF-OVS numbers by granularity
    assert overall["pairs"] > 0 and 0.0 <= overall["miou"] <= 1.0 and 0.0 <= overall["macc"] <= 1.0
    assert set(metrics["by_level"]) <= {"subpart", "part", "whole"}
    # the default baselines ran on the same splats and are in the report next to GAGS
    assert [row["method"] for row in result["baselines"]] == ["average", "langsplat"]
    assert all(row["overall"]["pairs"] == overall["pairs"] for row in result["baselines"])
    report = (ev / "demo.md").read_text()
    assert "gags (this run)" in report
    # one line names the best method per granularity, another gives the learnt alpha per view ring
    assert "Best mIoU: " in report and "Learnt alpha" in report
    # and one whether each method's loss plateaued (5 steps are less than an epoch: too short to tell)
    assert set(result["plateau"]) == {"GAGS", "average", "langsplat"}
    assert "runs too short to tell" in report
    for ring, row in result["alpha"]["by_ring"].items():
        assert ring in {"far", "mid", "near"} and row["pixels"] > 0
        assert sum(row["alpha"].values()) == pytest.approx(1.0, abs=0.01)
    # the segments' granularity agreement is measured for every ring that was prepared
    assert set(result["segments"]) == {"far", "mid", "near"}
    assert all(0.0 <= v <= 1.0 for row in result["segments"].values() for v in row.values())
    assert np.isfinite(result["timings"]["total"])
    out = capsys.readouterr().out
    assert "| stage | seconds |" in out and str(ev / "demo.md") in out


def test_a_failure_beside_the_parallel_baselines_stops_them(tmp_path, monkeypatch):
    import multiprocessing

    from gags.errors import GagsError
    from gags.stages import demo

    def fail(cfg):
        raise GagsError("distillation failed on purpose")

    monkeypatch.setattr(demo, "_distill", fail)
    cfg = DemoConfig.reduced(tmp_path / "run", cache_dir=tmp_path / "cache")
    assert cfg.parallel_baselines and cfg.baselines
    with pytest.raises(GagsError, match="on purpose"):
        run_demo(cfg)
    for child in multiprocessing.active_children():
        child.join(timeout=20)
    assert not multiprocessing.active_children()  # the baselines' process was stopped, not awaited
    assert not (tmp_path / "run" / "baselines" / "ablation.json").exists()
