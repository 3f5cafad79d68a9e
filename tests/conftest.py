"""Shared fixtures: offline model hubs, seeded RNGs, the shared data folder."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

#: ``../shared/data`` next to the project root
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _seed() -> None:
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


def shared_dataset(name: str) -> Path:
    """Path to ``../shared/data/NAME``; skips the test with the reason when it is absent."""
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"shared data set {path} is not present on this machine")
    return path


# ----------------------------------------------------------------------------- a tiny finished run

#: the smallest synthetic scene every stage accepts (48 x 36 pixels, 11 views, ~260 Gaussians)
TINY_SCENE = dict(
    seed=0, width=48, height=36, n_far=2, n_mid=2, near_per_object=1, n_label_frames=2, density=0.2
)


@dataclasses.dataclass(frozen=True)
class TinyRun:
    """A finished run folder (import of the ground-truth splats, prepare with the oracles, 5 distill
    steps) and the synthetic data set it was made from (LERF-OVS labels in ``scene/labels``)."""

    run: Path
    scene: Path


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> TinyRun:
    """Built once per session (about 20 s on a CPU); copy it (``run_copy``) before changing it."""
    from gags.stages.distill import DistillConfig, distill
    from gags.stages.prepare import PrepareConfig, prepare
    from gags.stages.train_rgb import import_ground_truth
    from gags.synthetic.generate import SyntheticConfig, generate_scene

    root = tmp_path_factory.mktemp("tiny_run")
    scene = generate_scene(SyntheticConfig(**TINY_SCENE, cache_dir=root / "cache"))
    run = root / "run"
    import_ground_truth(scene, run)
    prepare(PrepareConfig(run=run, segmenter="oracle", encoder="oracle", device="cpu", seed=0))
    distill(DistillConfig(run=run, iterations=5, device="cpu", progress=False))
    return TinyRun(run=run, scene=scene)


@pytest.fixture
def run_copy(tiny_run: TinyRun, tmp_path: Path) -> Path:
    """A private copy of the tiny run (modification times kept, so fingerprints are not rehashed)."""
    return Path(shutil.copytree(tiny_run.run, tmp_path / "run", copy_function=shutil.copy2))


def folder_digest(root: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``root`` (hidden ones included)."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(Path(root).rglob("*"))
        if p.is_file()
    }


def gags_cli(args: list[object], capsys) -> tuple[int, str]:
    """Run ``gags ARGS`` in this process -> (exit code, what it printed to stderr)."""
    from gags.cli import main

    capsys.readouterr()
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    return code, capsys.readouterr().err


@pytest.fixture(scope="session")
def reduced_run(tmp_path_factory) -> Path:
    """A reduced synthetic run (``DemoConfig.reduced``, no baselines): splats, segments, language field.

    Built once per session (about 40 s on 2 cores) for the tests that only read a run (viewer, video,
    frames). The field is distilled at full resolution, 2048 pixels per view, for 60 steps (the reduced
    demo's 5 steps at half resolution do not find the mug), so the viewer test can look for it.
    ``GAGS_TEST_RUN=/path/to/run`` uses an existing synthetic run instead.
    """
    given = os.environ.get("GAGS_TEST_RUN")
    if given:
        return Path(given)
    from gags.stages.demo import DemoConfig, run_demo

    root = tmp_path_factory.mktemp("reduced")
    cfg = DemoConfig.reduced(
        root / "run",
        baselines=(),
        queries=(),
        cache_dir=root / "cache",
        distill_iterations=60,
        distill_downscale=1.0,
        distill_pixels=2048,
    )
    run_demo(cfg)
    return cfg.out
