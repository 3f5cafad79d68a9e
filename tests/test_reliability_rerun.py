"""A stage never silently destroys or invalidates earlier work (issue 10, item 2).

Re-running a stage over a finished run, replacing the splats, resuming with another data set,
interrupted stages, two writers at once and leftovers of a killed run, on the tiny synthetic run.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import folder_digest, gags_cli

from gags.runfolder import LOCK_NAME, RunFolder

CPU = ["--device", "cpu"]


def _other_splats(src: Path, dst: Path) -> Path:
    """The same Gaussians, a little more opaque: different bytes, same layout."""
    from gags.splats.ply import load_ply, save_ply

    g = load_ply(src)
    save_ply(dst, dataclasses.replace(g, opacity_logits=g.opacity_logits + 0.5))
    return dst


def _other_data_set(scene: Path, dst: Path) -> Path:
    """A copy of the scene whose camera poses are moved by 5 cm: another data set."""
    shutil.copytree(scene, dst)
    transforms = dst / "transforms_train.json"
    data = json.loads(transforms.read_text())
    for frame in data["frames"]:
        frame["transform_matrix"][0][3] += 0.05
    transforms.write_text(json.dumps(data))
    return dst


def _import_args(tiny_run, run: Path, ply: Path | None = None) -> list[object]:
    return ["import", ply or tiny_run.scene / "gt_splats.ply", "--data", tiny_run.scene, "--out", run,
            "--no-evaluate"]  # fmt: skip


def test_train_rgb_and_import_refuse_to_replace_a_finished_run(run_copy, tiny_run, capsys):
    before = folder_digest(run_copy)
    for args in (
        ["train-rgb", tiny_run.scene, "--out", run_copy, "--iterations", "0", "--no-evaluate", *CPU],
        _import_args(tiny_run, run_copy),
    ):
        code, err = gags_cli(args, capsys)
        assert code == 2, err
        assert (
            f"{run_copy / 'splats.ply'}: already exists" in err and "--overwrite" in err and "--resume" in err
        )
        assert folder_digest(run_copy) == before


def test_overwrite_with_new_splats_moves_later_outputs_aside_and_later_stages_say_what_to_rerun(
    run_copy, tiny_run, tmp_path, capsys
):
    before = folder_digest(run_copy)
    new = _other_splats(tiny_run.scene / "gt_splats.ply", tmp_path / "new.ply")
    code, err = gags_cli([*_import_args(tiny_run, run_copy, new), "--overwrite"], capsys)
    assert code == 0, err
    stale = sorted(run_copy.glob("stale-*"))
    assert len(stale) == 1
    moved = folder_digest(stale[0])
    for rel in ("language.pt", "splats_language.ply", "checkpoints/distill.pt", "segments/frame_0002.npz"):
        assert moved[rel] == before[rel], rel  # kept byte for byte, just out of the way
        assert not (run_copy / rel).exists()
    assert json.loads((stale[0] / "config.json").read_text())["distill"]  # the old records travel along
    config = RunFolder(run_copy).read_config()
    assert "prepare" not in config and "distill" not in config and "prepare" not in config["fingerprints"]

    code, err = gags_cli(["distill", run_copy, *CPU], capsys)
    assert code == 2 and "gags prepare" in err and str(run_copy) in err, err
    code, err = gags_cli(["query", run_copy, "cup", *CPU], capsys)
    assert code == 2 and "language.pt does not exist" in err and "gags distill" in err and "stale-" in err, (
        err
    )


def test_overwrite_with_identical_splats_keeps_later_outputs(run_copy, tiny_run, capsys):
    before = folder_digest(run_copy)
    code, err = gags_cli([*_import_args(tiny_run, run_copy), "--overwrite"], capsys)
    assert code == 0, err
    after = folder_digest(run_copy)
    assert not list(run_copy.glob("stale-*"))
    assert {
        k: v for k, v in after.items() if k != "config.json" and not k.startswith("checkpoints/latest")
    } == {k: v for k, v in before.items() if k != "config.json" and not k.startswith("checkpoints/latest")}
    code, err = gags_cli(["query", run_copy, "cup", "--box-size", "3", *CPU], capsys)
    assert code == 0, err


def test_resume_checks_the_data_set_and_settings(run_copy, tiny_run, tmp_path, capsys):
    other = _other_data_set(tiny_run.scene, tmp_path / "other")
    resume = ["--out", run_copy, "--resume", "--import-ply", tiny_run.scene / "gt_splats.ply", "--iterations",
              "0", "--no-evaluate", *CPU]  # fmt: skip
    before = folder_digest(run_copy)
    code, err = gags_cli(["train-rgb", other, *resume, "--sh-degree", "1"], capsys)
    assert code == 2, err
    assert str(run_copy / "checkpoints" / "latest.pt") in err and "another data set" in err
    code, err = gags_cli(["train-rgb", tiny_run.scene, *resume, "--sh-degree", "2"], capsys)
    assert code == 2 and "sh_degree=1, not 2" in err, err
    assert folder_digest(run_copy) == before
    # the same data set and settings resume (here: nothing left to train) and keep the later outputs
    code, err = gags_cli(["train-rgb", tiny_run.scene, *resume, "--sh-degree", "1"], capsys)
    assert code == 0, err
    assert (run_copy / "language.pt").exists() and not list(run_copy.glob("stale-*"))


def test_splats_replaced_by_hand_are_detected_by_every_later_stage(run_copy, tiny_run, tmp_path, capsys):
    _other_splats(run_copy / "splats.ply", tmp_path / "new.ply")
    shutil.copy(tmp_path / "new.ply", run_copy / "splats.ply")
    before = folder_digest(run_copy)
    labels = tiny_run.scene / "labels"
    for args, fix in (
        (
            ["prepare", run_copy, "--segmenter", "oracle", "--encoder", "oracle", "--seed", "0", *CPU],
            "--overwrite",
        ),
        (["distill", run_copy, "--iterations", "5", *CPU], "gags prepare"),
        (["query", run_copy, "cup", "--box-size", "3", *CPU], "gags distill"),
        (["eval", run_copy, "--labels", labels, "--box-size", "3", *CPU], "gags distill"),
    ):
        code, err = gags_cli(args, capsys)
        assert code == 2, (args[0], err)
        assert f"{run_copy / 'splats.ply'}: has changed since" in err and fix in err, (args[0], err)
    assert folder_digest(run_copy) == before


def test_prepare_with_other_settings_needs_overwrite(run_copy, capsys):
    before = folder_digest(run_copy)
    args = ["prepare", run_copy, "--segmenter", "oracle", "--encoder", "oracle", "--seed", "0", *CPU]
    code, err = gags_cli([*args, "--prompts.grid", "4"], capsys)
    assert code == 2 and str(run_copy / "segments") in err and "prompts.grid: 8 -> 4" in err, err
    assert folder_digest(run_copy) == before
    code, err = gags_cli(args, capsys)  # the same settings: every view is already there
    assert code == 0, err


def test_an_interrupted_prepare_is_not_taken_for_a_finished_one(run_copy, monkeypatch, capsys):
    from gags.stages import prepare as prepare_stage

    calls = []

    def crash(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    real = prepare_stage._prepare_view
    monkeypatch.setattr(prepare_stage, "_prepare_view", crash)
    args = ["prepare", run_copy, "--segmenter", "oracle", "--encoder", "oracle", "--seed", "0", "--overwrite"]
    code, err = gags_cli([*args, *CPU], capsys)
    assert code == 130 and "interrupted" in err
    assert not (run_copy / LOCK_NAME).exists()
    code, err = gags_cli(["distill", run_copy, "--iterations", "5", *CPU], capsys)
    assert code == 2 and "`gags prepare` started but did not finish" in err, err


def test_distill_records_its_stage_only_after_success(run_copy, monkeypatch, capsys):
    from gags.stages import distill as distill_stage

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device", str(run_copy / "checkpoints" / "distill.pt"))

    monkeypatch.setattr(distill_stage, "train_field", fail)
    before = folder_digest(run_copy)
    code, err = gags_cli(["distill", run_copy, "--iterations", "7", *CPU], capsys)
    assert code == 2 and "no space left" in err, err
    assert folder_digest(run_copy) == before  # config.json still records the 5-step run


_HOLDER = """
import sys
from gags.runfolder import RunFolder
with RunFolder(sys.argv[1]).lock("distill"):
    print("held", flush=True)
    sys.stdin.readline()
"""


def test_a_second_writer_fails_clearly_while_a_live_process_holds_the_lock(run_copy, tiny_run, capsys):
    src = Path(__file__).resolve().parents[1] / "src"
    env = {"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(run_copy)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        before = folder_digest(run_copy)
        for args in (
            ["distill", run_copy, "--iterations", "5", *CPU],
            ["eval", run_copy, "--labels", tiny_run.scene / "labels", "--box-size", "3", *CPU],
        ):
            code, err = gags_cli(args, capsys)
            assert code == 2, err
            assert str(run_copy / LOCK_NAME) in err and f"PID {holder.pid}" in err and "gags distill" in err
        assert folder_digest(run_copy) == before
    finally:
        holder.communicate("\n", timeout=30)
    assert not (run_copy / LOCK_NAME).exists()


def test_a_lock_left_by_a_dead_process_is_taken_over(run_copy, tiny_run, capsys):
    dead = subprocess.Popen(["true"])
    dead.wait()
    (run_copy / LOCK_NAME).write_text(json.dumps({"pid": dead.pid, "stage": "distill", "since": "yesterday"}))
    code, err = gags_cli(
        ["eval", run_copy, "--labels", tiny_run.scene / "labels", "--box-size", "3", *CPU], capsys
    )
    assert code == 0, err
    assert not (run_copy / LOCK_NAME).exists()


def test_leftover_temporary_files_of_a_killed_run_are_removed(run_copy, tiny_run, capsys):
    leftovers = [
        run_copy / ".language.k2j4h5g6.tmp.pt",
        run_copy / "segments" / ".frame_0002.ab_cd123.tmp.npz",
    ]
    keep = run_copy / ".notes.tmp"  # not one of gags's temporary names
    for p in [*leftovers, keep]:
        p.write_bytes(b"half written")
    code, err = gags_cli(
        ["eval", run_copy, "--labels", tiny_run.scene / "labels", "--box-size", "3", *CPU], capsys
    )
    assert code == 0, err
    assert not any(p.exists() for p in leftovers) and keep.exists()


@pytest.mark.parametrize("kept", [False, True])
def test_prepare_overwrite_drops_the_old_outputs_of_a_view_it_cannot_redo(run_copy, monkeypatch, kept):
    from gags.stages import prepare as prepare_stage
    from gags.stages.prepare import PrepareConfig, prepare

    real = prepare_stage._prepare_view

    def skip_one(run, cam, *args, **kwargs):
        if cam.name.startswith("frame_0002") and not kept:
            return "no Gaussian is visible in this view"
        return real(run, cam, *args, **kwargs)

    monkeypatch.setattr(prepare_stage, "_prepare_view", skip_one)
    cfg = PrepareConfig(
        run=run_copy, segmenter="oracle", encoder="oracle", device="cpu", seed=0, overwrite=True
    )
    summary = prepare(cfg)
    folder = RunFolder(run_copy)
    assert folder.segment_file("frame_0002.png").exists() == kept
    assert folder.feature_file("frame_0002.png").exists() == kept
    assert ("frame_0002.png" in summary["skipped"]) != kept


def test_a_run_folder_of_an_older_gags_without_fingerprints_keeps_working(run_copy, tiny_run, capsys):
    config = json.loads((run_copy / "config.json").read_text())
    del config["fingerprints"]
    (run_copy / "config.json").write_text(json.dumps(config))
    labels = tiny_run.scene / "labels"
    for args in (
        ["eval", run_copy, "--labels", labels, "--box-size", "3", *CPU],  # records fingerprints of its own
        ["query", run_copy, "cup", "--box-size", "3", *CPU],  # distill's record is an old one: not checked
        ["distill", run_copy, "--iterations", "5", *CPU],
        ["query", run_copy, "cup", "--box-size", "3", *CPU],
    ):
        code, err = gags_cli(args, capsys)
        assert code == 0, (args[0], err)
    assert "distill" in RunFolder(run_copy).read_config()["fingerprints"]
