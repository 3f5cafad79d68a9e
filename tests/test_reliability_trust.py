"""Opening a run folder never runs code (issue 10, item 1), and files get the user's umask (item 5).

A crafted pickle in ``language.pt`` or a checkpoint would create a marker file when unpickled with
``weights_only=False``; every reader must refuse it with one line naming the file, leave no marker and
change nothing in the run folder.
"""

from __future__ import annotations

import ast
import os
import stat
from pathlib import Path

import pytest
import torch
from conftest import folder_digest, gags_cli

SRC = Path(__file__).resolve().parents[1] / "src" / "gags"


class _Marker:
    """Unpickling this calls ``open(path, "w")``: the stand-in for arbitrary code."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _plant(path: Path, marker: Path, base: object) -> None:
    payload = dict(base) if isinstance(base, dict) else {}
    payload["extra"] = _Marker(marker)
    torch.save(payload, path)


@pytest.mark.parametrize(
    "target, command",
    [
        ("language.pt", ["query", "{run}", "cup", "--device", "cpu", "--box-size", "3"]),
        ("language.pt", ["eval", "{run}", "--labels", "{labels}", "--device", "cpu", "--box-size", "3"]),
        (
            "checkpoints/latest.pt",
            [
                "train-rgb",
                "{scene}",
                "--out",
                "{run}",
                "--resume",
                "--import-ply",
                "{gt}",
                "--iterations",
                "0",
                "--sh-degree",
                "1",
                "--no-evaluate",
                "--device",
                "cpu",
            ],
        ),  # fmt: skip
        ("checkpoints/distill.pt", ["distill", "{run}", "--resume", "--iterations", "5", "--device", "cpu"]),
    ],
)
def test_malicious_pickle_is_refused_without_running(run_copy, tiny_run, tmp_path, capsys, target, command):
    path = run_copy / target
    marker = tmp_path / "code-ran"
    _plant(path, marker, torch.load(path, weights_only=True))
    if target == "language.pt":  # recorded fingerprint updated, so only the pickle itself is at fault
        _refresh_fingerprint(run_copy, target)
    before = folder_digest(run_copy)
    values = {
        "run": run_copy,
        "scene": tiny_run.scene,
        "labels": tiny_run.scene / "labels",
        "gt": tiny_run.scene / "gt_splats.ply",
    }
    code, err = gags_cli([c.format(**values) for c in command], capsys)
    assert code == 2, err
    assert not marker.exists(), "unpickling ran code"
    assert str(path) in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert folder_digest(run_copy) == before


def _refresh_fingerprint(run: Path, rel: str) -> None:
    import json

    from gags.runfolder import RunFolder

    folder = RunFolder(run)
    data = json.loads(folder.config.read_text())
    for entry in data["fingerprints"].values():
        for side in ("inputs", "outputs"):
            if rel in entry.get(side, {}):
                entry[side][rel] = folder.fingerprint(run / rel, {})
    folder.config.write_text(json.dumps(data))


def test_every_torch_load_in_src_is_weights_only():
    """Static check: each ``torch.load(...)`` in src passes ``weights_only=True``; no ``np.load`` allows
    pickles."""
    offenders = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            kw = {k.arg: k.value for k in node.keywords}
            owner = node.func.value.id if isinstance(node.func.value, ast.Name) else ""
            where = f"{path.relative_to(SRC)}:{node.lineno}"
            if owner == "torch" and node.func.attr == "load":
                value = kw.get("weights_only")
                if not (isinstance(value, ast.Constant) and value.value is True):
                    offenders.append(where)
            if owner == "np" and node.func.attr == "load":
                value = kw.get("allow_pickle")
                if value is not None and not (isinstance(value, ast.Constant) and value.value is False):
                    offenders.append(where)
    assert offenders == []


def test_language_field_of_an_older_format_loads_and_a_pickled_object_says_how_to_regenerate(
    run_copy, tmp_path
):
    from gags.distill.field import LanguageField
    from gags.errors import GagsError

    payload = torch.load(run_copy / "language.pt", weights_only=True)
    old = {k: v for k, v in payload.items() if k not in ("levels", "format")}  # format 1 (gags <= 0.1)
    torch.save(old, tmp_path / "language.pt")
    (tmp_path / "splats.ply").write_bytes((run_copy / "splats.ply").read_bytes())
    assert LanguageField.load(tmp_path / "language.pt").levels == ("gags",)

    torch.save({**payload, "decoder_config": _Marker(tmp_path / "code-ran")}, tmp_path / "language.pt")
    with pytest.raises(GagsError, match="re-run `gags distill`"):
        LanguageField.load(tmp_path / "language.pt")
    assert not (tmp_path / "code-ran").exists()


def test_outputs_get_the_users_umask(tmp_path):
    from gags.io import save_npz_atomic, save_torch_atomic, write_json_atomic

    old = os.umask(0o027)
    try:
        write_json_atomic(tmp_path / "a.json", {"x": 1})
        save_torch_atomic(tmp_path / "b.pt", {"x": torch.zeros(2)})
        save_npz_atomic(tmp_path / "c.npz", x=torch.zeros(2).numpy())
    finally:
        os.umask(old)
    for name in ("a.json", "b.pt", "c.npz"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o640, name
