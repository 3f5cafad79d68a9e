"""Every bad input is one clean line naming the file and the problem, exit code 2, and the run folder
is left byte for byte as it was (issue 10, item 3; absurd options: item 2).

Damaged files, malformed config.json, checkpoints of the wrong shape, empty PLYs, bad label and
camera files, a read-only folder (mocked EROFS: the tests run as root), a full disk (mocked ENOSPC),
an output path that is a file, and options that would crash or give a useless result.
"""

from __future__ import annotations

import builtins
import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import folder_digest, gags_cli

CPU = ["--device", "cpu"]


def _clean_error(code: int, err: str, names: object) -> None:
    """Exit code 2 and one ``gags: error:`` line (after any progress bars) that names ``names``."""
    assert code == 2, err
    assert "Traceback" not in err and err.count("gags: error:") == 1, err
    message = err.split("gags: error:")[1]
    assert message.count("\n") == 1 and message.endswith("\n") and "\r" not in message, err
    assert str(names) in message, err


# ----------------------------------------------------------------------------- damaged run files


@pytest.mark.parametrize(
    "rel, damage",
    [
        ("segments/frame_0002.npz", "truncate"),
        ("segments/frame_0002.npz", "empty"),
        ("features/frame_0003.npz", "truncate"),
        ("features/frame_0003.npz", "empty"),
        ("features/frame_0003.npz", "garbage"),
        ("features/frame_0003.npz", "strings"),
    ],
)
def test_damaged_npz_read_by_distill(run_copy, capsys, rel, damage):
    path = run_copy / rel
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "garbage":
        path.write_bytes(os.urandom(512))
    else:
        with open(path, "wb") as f:
            np.savez(f, features=np.array(["a", "b"]), levels=np.zeros(2, np.int8))
    before = folder_digest(run_copy)
    code, err = gags_cli(["distill", run_copy, "--iterations", "5", *CPU], capsys)
    _clean_error(code, err, path)
    assert folder_digest(run_copy) == before


CONFIGS = {
    "binary": b"\x80\x81\xfe\xff" * 16,
    "null": b"null",
    "list": b"[1, 2]",
    "string": b'"run"',
    "truncated": b'{"scene": {"data": ',
    "scene-list": json.dumps({"scene": [1, 2]}).encode(),
    "scene-wrong-types": json.dumps({"scene": {"data": 5, "downscale": "x"}}).encode(),
    "prepare-list": None,  # filled in from the run's own config
    "fingerprints-list": None,
}


@pytest.mark.parametrize("variant", sorted(CONFIGS))
def test_malformed_config_json(run_copy, tiny_run, capsys, variant):
    config = run_copy / "config.json"
    content = CONFIGS[variant]
    if content is None:
        data = json.loads(config.read_text())
        data["prepare" if variant == "prepare-list" else "fingerprints"] = [1, 2]
        content = json.dumps(data).encode()
    config.write_bytes(content)
    before = folder_digest(run_copy)
    commands = [
        ["distill", run_copy, "--iterations", "5", *CPU],
        ["prepare", run_copy, "--segmenter", "oracle", "--encoder", "oracle", "--seed", "0", *CPU],
    ]
    if (
        variant != "prepare-list"
    ):  # query and eval do not read the prepare entry (language.pt names the encoder)
        commands += [
            ["query", run_copy, "cup", "--box-size", "3", *CPU],
            ["eval", run_copy, "--labels", tiny_run.scene / "labels", "--box-size", "3", *CPU],
        ]
    for args in commands:
        code, err = gags_cli(args, capsys)
        _clean_error(code, err, config)
    assert folder_digest(run_copy) == before


@pytest.mark.parametrize("content", ["list", "no-keys", "bad-step"])
def test_checkpoints_of_the_wrong_shape(run_copy, tiny_run, capsys, content):
    latest, distill = run_copy / "checkpoints" / "latest.pt", run_copy / "checkpoints" / "distill.pt"
    saved = torch.load(distill, weights_only=True)
    if content == "list":
        torch.save([1, 2, 3], latest)
        torch.save([1, 2, 3], distill)
    elif content == "no-keys":
        torch.save({"step": 3}, latest)
        torch.save({"config": saved["config"]}, distill)
    else:
        torch.save({**torch.load(latest, weights_only=True), "params": [1]}, latest)
        torch.save({**saved, "step": "three"}, distill)
    before = folder_digest(run_copy)
    gt = tiny_run.scene / "gt_splats.ply"
    code, err = gags_cli(
        ["train-rgb", tiny_run.scene, "--out", run_copy, "--resume", "--import-ply", gt, "--iterations", "0",
         "--sh-degree", "1", "--no-evaluate", *CPU],
        capsys,
    )  # fmt: skip
    _clean_error(code, err, latest)
    code, err = gags_cli(["distill", run_copy, "--resume", "--iterations", "5", *CPU], capsys)
    _clean_error(code, err, distill)
    assert folder_digest(run_copy) == before


def test_ply_with_zero_vertices(tiny_run, tmp_path, capsys):
    from plyfile import PlyData, PlyElement

    fields = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2",
              "rot_0", "rot_1", "rot_2", "rot_3"]  # fmt: skip
    empty = tmp_path / "empty.ply"
    PlyData([PlyElement.describe(np.zeros(0, dtype=[(f, "f4") for f in fields]), "vertex")]).write(str(empty))
    out = tmp_path / "new-run"
    code, err = gags_cli(["import", empty, "--data", tiny_run.scene, "--out", out, "--no-evaluate"], capsys)
    _clean_error(code, err, empty)
    assert "no Gaussians" in err and not out.exists()


# ----------------------------------------------------------------------------- labels and cameras


@pytest.mark.parametrize("damage", ["invalid-utf8", "nan-vertex", "nan-bbox", "float-size", "infinite-size"])
def test_bad_label_files(run_copy, tiny_run, tmp_path, capsys, damage):
    import shutil

    labels = Path(shutil.copytree(tiny_run.scene / "labels", tmp_path / "labels"))
    path = sorted(p for p in labels.glob("*.json") if p.name != "levels.json")[0]
    data = json.loads(path.read_text())
    if damage == "invalid-utf8":
        path.write_bytes(path.read_bytes().replace(b'"info"', b'"inf\xff\xfe"', 1))
    else:
        if damage == "nan-vertex":
            data["objects"][0]["segmentation"][0][0] = float("nan")
        elif damage == "nan-bbox":
            data["objects"][0]["bbox"][1] = float("nan")
        elif damage == "float-size":
            data["info"]["width"] = 47.5
        else:
            data["info"]["height"] = float("inf")
        path.write_text(json.dumps(data))  # Python writes NaN / Infinity, as some tools do
    before = folder_digest(run_copy)
    code, err = gags_cli(["eval", run_copy, "--labels", labels, "--box-size", "3", *CPU], capsys)
    _clean_error(code, err, path)
    assert folder_digest(run_copy) == before


def _camera(**change):
    cam = {"name": "extra", "K": [[40.0, 0, 24], [0, 40.0, 18], [0, 0, 1]], "width": 48, "height": 36}
    cam["world_to_cam"] = np.eye(4).tolist()
    cam["world_to_cam"][2][3] = 1.0
    cam.update(change)
    return cam


@pytest.mark.parametrize(
    "content",
    [
        [],
        [_camera(world_to_cam=[[float("nan")] * 4] * 4)],
        [_camera(K=[[0, 0, 24], [0, 40.0, 18], [0, 0, 1]])],
        [_camera(width=0)],
        [_camera(height=35.5)],
        [_camera(width="48")],
        [_camera(width=10**9)],
        [_camera(world_to_cam=(2 * np.eye(4)).tolist())],
        [_camera(), _camera()],
        "not json",
        b"\xff\xfe{}",
    ],
    ids=[
        "empty-list",
        "nan-pose",
        "zero-focal",
        "zero-width",
        "fractional-height",
        "string-width",
        "huge",
        "not-rigid",
        "same-names",
        "not-json",
        "invalid-utf8",
    ],  # fmt: skip
)
def test_bad_camera_files(run_copy, tmp_path, capsys, content):
    path = tmp_path / "cameras.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    before = folder_digest(run_copy)
    code, err = gags_cli(["query", run_copy, "cup", "--camera", path, "--box-size", "3", *CPU], capsys)
    _clean_error(code, err, path)
    assert folder_digest(run_copy) == before


def test_a_good_camera_file_is_accepted(run_copy, tmp_path, capsys):
    path = tmp_path / "cameras.json"
    path.write_text(json.dumps([_camera()]))
    code, err = gags_cli(["query", run_copy, "cup", "--camera", path, "--box-size", "3", *CPU], capsys)
    assert code == 0, err
    assert (run_copy / "queries" / "cup" / "extra_heatmap.png").exists()


# ----------------------------------------------------------------------------- the file system


def _read_only(monkeypatch, root: Path) -> None:
    """Make every attempt to create, replace or delete something under ``root`` fail with EROFS."""
    root = str(root.resolve())

    def inside(path) -> bool:
        return os.path.abspath(os.fspath(path)).startswith(root)

    def guard(real, check):
        def wrapped(*args, **kwargs):
            if check(*args, **kwargs):
                raise OSError(errno.EROFS, "Read-only file system", os.fspath(args[0]))
            return real(*args, **kwargs)

        return wrapped

    writes = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC
    monkeypatch.setattr(os, "open", guard(os.open, lambda p, flags, *a, **k: inside(p) and flags & writes))
    for name in ("unlink", "remove", "rmdir", "replace", "rename"):
        monkeypatch.setattr(os, name, guard(getattr(os, name), lambda p, *a, **k: inside(p)))
    # mkdir of an existing folder still says EEXIST, as the kernel does
    monkeypatch.setattr(os, "mkdir", guard(os.mkdir, lambda p, *a, **k: inside(p) and not os.path.exists(p)))


def test_read_only_run_folder(run_copy, tiny_run, tmp_path, monkeypatch, capsys):
    before = folder_digest(run_copy)
    _read_only(monkeypatch, run_copy)
    labels = tiny_run.scene / "labels"
    for args in (
        ["eval", run_copy, "--labels", labels, "--box-size", "3", *CPU],
        ["distill", run_copy, "--iterations", "5", *CPU],
        ["query", run_copy, "cup", "--box-size", "3", *CPU],
    ):
        code, err = gags_cli(args, capsys)
        _clean_error(code, err, run_copy / ".gags.lock")
        assert "read-only" in err
    # a downloaded run on read-only media can still be queried into another folder
    code, err = gags_cli(["query", run_copy, "cup", "--box-size", "3", "--out", tmp_path / "q", *CPU], capsys)
    assert code == 0, err
    monkeypatch.undo()
    assert folder_digest(run_copy) == before


def _full_disk(monkeypatch) -> None:
    """Every file gags.io writes fails after a few bytes with ENOSPC, as on a full disk."""
    import gags.io

    class Full:
        def __init__(self, f):
            self.f = f

        def write(self, data):
            self.f.write(data[:10])
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    def full_open(file, mode="r", *args, **kwargs):
        f = builtins.open(file, mode, *args, **kwargs)
        return Full(f) if any(c in mode for c in "wax+") else f

    monkeypatch.setattr(gags.io, "open", full_open, raising=False)


@pytest.mark.parametrize("stage", ["distill", "eval"])
def test_full_disk(run_copy, tiny_run, monkeypatch, capsys, stage):
    before = folder_digest(run_copy)
    _full_disk(monkeypatch)
    if stage == "distill":
        args, victim = (
            ["distill", run_copy, "--iterations", "5", *CPU],
            run_copy / "checkpoints" / "distill.pt",
        )
    else:
        args = ["eval", run_copy, "--labels", tiny_run.scene / "labels", "--box-size", "3", *CPU]
        victim = run_copy / "eval" / "metrics.json"
    code, err = gags_cli(args, capsys)
    _clean_error(code, err, victim)
    assert "no space left" in err
    assert folder_digest(run_copy) == before  # no half-written file, no temporary left behind


def test_output_paths_that_are_files(run_copy, tiny_run, tmp_path, capsys):
    a_file = tmp_path / "a-file"
    a_file.write_text("mine")
    code, err = gags_cli(["train-rgb", tiny_run.scene, "--out", a_file, "--iterations", "0", *CPU], capsys)
    _clean_error(code, err, a_file)
    code, err = gags_cli(
        ["import", tiny_run.scene / "gt_splats.ply", "--data", tiny_run.scene, "--out", a_file], capsys
    )
    _clean_error(code, err, a_file)
    before = folder_digest(run_copy)
    code, err = gags_cli(["query", run_copy, "cup", "--box-size", "3", "--out", a_file, *CPU], capsys)
    _clean_error(code, err, a_file)
    (run_copy / "eval").write_text("in the way")
    code, err = gags_cli(
        ["eval", run_copy, "--labels", tiny_run.scene / "labels", "--box-size", "3", *CPU], capsys
    )
    _clean_error(code, err, run_copy / "eval")
    assert "is a file where a folder is needed" in err
    (run_copy / "eval").unlink()
    assert folder_digest(run_copy) == before and a_file.read_text() == "mine"


# ----------------------------------------------------------------------------- absurd options

ABSURD = {
    "distill --feature-dim 0": (["distill", "{run}", "--feature-dim", "0"], "--feature-dim"),
    "distill --downscale 0": (["distill", "{run}", "--downscale", "0"], "--downscale"),
    "distill --downscale 10": (["distill", "{run}", "--downscale", "10"], "5x4 pixels"),
    "distill --iterations 0": (["distill", "{run}", "--iterations", "0"], "--iterations"),
    "distill --checkpoint-every -1": (["distill", "{run}", "--checkpoint-every", "-1"], "--checkpoint-every"),
    "prepare --prompts.grid 0": (
        [
            "prepare",
            "{run}",
            "--segmenter",
            "oracle",
            "--encoder",
            "oracle",
            "--overwrite",
            "--prompts.grid",
            "0",
        ],
        "--prompts.grid",
    ),
    "prepare --prompts.grid 100": (
        [
            "prepare",
            "{run}",
            "--segmenter",
            "oracle",
            "--encoder",
            "oracle",
            "--overwrite",
            "--prompts.grid",
            "100",
        ],
        "36 pixels",
    ),
    "prepare --clip-batch-size 0": (
        [
            "prepare",
            "{run}",
            "--segmenter",
            "oracle",
            "--encoder",
            "oracle",
            "--overwrite",
            "--clip-batch-size",
            "0",
        ],
        "--clip-batch",
    ),
    "prepare --sam.pred-iou-thresh 2": (
        ["prepare", "{run}", "--segmenter", "oracle", "--encoder", "oracle", "--sam.pred-iou-thresh", "2"],
        "--sam.pred-iou",
    ),
    "query --box-size 0": (["query", "{run}", "cup", "--box-size", "0"], "--box-size"),
    "query --box-size 100": (["query", "{run}", "cup", "--box-size", "100"], "larger than view"),
    "query --threshold 1.5": (["query", "{run}", "cup", "--threshold", "1.5"], "--threshold"),
    "eval --box-size 0": (["eval", "{run}", "--labels", "{labels}", "--box-size", "0"], "--box-size"),
    "eval --box-size 100": (
        ["eval", "{run}", "--labels", "{labels}", "--box-size", "100"],
        "larger than label",
    ),
    "train-rgb --downscale 0": (["train-rgb", "{scene}", "--out", "{new}", "--downscale", "0"], "downscale"),
    "train-rgb --downscale 10": (
        ["train-rgb", "{scene}", "--out", "{new}", "--downscale", "10"],
        "5x4 pixels",
    ),
    "train-rgb --checkpoint-every 0": (
        ["train-rgb", "{scene}", "--out", "{new}", "--checkpoint-every", "0"],
        "--che",
    ),
    "train-rgb --sh-degree 4": (
        ["train-rgb", "{scene}", "--out", "{new}", "--sh-degree", "4"],
        "--sh-degree",
    ),
    "train-rgb --batch-size 100": (
        ["train-rgb", "{scene}", "--out", "{new}", "--batch-size", "100"],
        "--batch-size",
    ),
    "train-rgb --lr-means 0": (["train-rgb", "{scene}", "--out", "{new}", "--lr-means", "0"], "--lr-means"),
    "train-rgb --overwrite --downscale 0": (
        ["train-rgb", "{scene}", "--out", "{run}", "--overwrite", "--downscale", "0"],
        "downscale",
    ),
}


@pytest.mark.parametrize("case", sorted(ABSURD))
def test_absurd_options_are_rejected_before_anything_is_written(run_copy, tiny_run, tmp_path, capsys, case):
    args, needle = ABSURD[case]
    new = tmp_path / "new-run"
    values = {"run": run_copy, "scene": tiny_run.scene, "labels": tiny_run.scene / "labels", "new": new}
    before = folder_digest(run_copy)
    code, err = gags_cli([a.format(**values) for a in args] + CPU, capsys)
    assert code == 2 and needle in err and "Traceback" not in err, err
    assert folder_digest(run_copy) == before and not new.exists()


# ----------------------------------------------------------------------------- the CLI's handler


def test_debug_shows_the_traceback(run_copy, monkeypatch, capsys):
    from gags.cli import main
    from gags.errors import GagsError

    with pytest.raises(GagsError, match="--feature-dim"):
        main(["--debug", "distill", str(run_copy), "--feature-dim", "0"])
    monkeypatch.setenv("GAGS_DEBUG", "1")
    with pytest.raises(GagsError, match="--feature-dim"):
        main(["distill", str(run_copy), "--feature-dim", "0"])
    monkeypatch.delenv("GAGS_DEBUG")
    code, err = gags_cli(["distill", run_copy, "--feature-dim", "0"], capsys)
    assert code == 2 and err.startswith("gags: error: --feature-dim")


@pytest.mark.parametrize(
    "number, words",
    [
        (errno.EROFS, "read-only"),
        (errno.ENOSPC, "no space left"),
        (errno.EACCES, "permission denied"),
        (errno.EEXIST, "already exists"),
    ],
)
def test_os_errors_become_one_line_with_the_path(number, words):
    from gags.cli import os_error_message

    message = os_error_message(OSError(number, os.strerror(number), "/runs/my run/language.pt"))
    assert message == f"/runs/my run/language.pt: {words}" or message.startswith("/runs/my run/language.pt: ")
    assert words in message and "\n" not in message
