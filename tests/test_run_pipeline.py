"""`gags run`: every stage once on a posed data set, then a re-run that skips what is up to date."""

from __future__ import annotations

import pytest

from gags.cli import main
from gags.runfolder import RunFolder
from gags.stages.demo import DemoConfig
from gags.stages.run import RunConfig, has_poses, run_pipeline
from gags.synthetic.generate import generate_scene


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    root = tmp_path_factory.mktemp("run_pipeline")
    return generate_scene(DemoConfig.reduced(root / "unused", cache_dir=root / "cache").synthetic())


def test_run_then_rerun_skips_finished_stages(scene, tmp_path, capsys):
    out = tmp_path / "run"
    args = dict(input=scene, out=out, rgb_iterations=6, distill_iterations=6, device="cpu", progress=False)
    first = run_pipeline(RunConfig(**args, segmenter="oracle", encoder="oracle", labels=scene / "labels"))
    assert first["preset"] == "quick" and "process-data" not in first["stages"]
    assert first["stages"]["train-rgb"].startswith("done") and first["stages"]["distill"].startswith("done")
    assert 0.0 <= first["eval"]["miou"] <= 1.0
    language = RunFolder(out).language.read_bytes()

    main(
        ["run", str(scene), "--out", str(out), "--rgb-iterations", "6", "--distill-iterations", "6"]
        + ["--segmenter", "oracle", "--encoder", "oracle", "--device", "cpu", "--no-progress"]
    )
    printed = capsys.readouterr().out
    assert printed.splitlines()[0] == "gags run: preset quick (auto), device cpu"
    assert (
        "skipped (splats.ply is up to date)" in printed and "skipped (language.pt is up to date)" in printed
    )
    assert "0 images done" in printed and f'gags query {out} "' in printed
    assert RunFolder(out).language.read_bytes() == language  # nothing was redone

    changed = run_pipeline(
        RunConfig(**{**args, "distill_iterations": 8}, segmenter="oracle", encoder="oracle")
    )
    assert changed["stages"]["train-rgb"].startswith("skipped")
    assert changed["stages"]["distill"].startswith("done") and "8 steps" in changed["stages"]["distill"]


def test_photos_and_videos_have_no_poses(scene, tmp_path):
    assert has_poses(scene)
    (tmp_path / "photos").mkdir()
    assert not has_poses(tmp_path / "photos") and not has_poses(tmp_path / "clip.mp4")
