"""Shared fixtures: offline model hubs, seeded RNGs, the shared data folder."""

from __future__ import annotations

import os
import random
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


@pytest.fixture(scope="session")
def reduced_run(tmp_path_factory) -> Path:
    """A reduced synthetic run (``DemoConfig.reduced``, no baselines): splats, segments, language field.

    Built once per session (about half a minute on 2 cores) for the tests that only read a run
    (viewer, video). ``GAGS_TEST_RUN=/path/to/run`` uses an existing synthetic run instead.
    """
    given = os.environ.get("GAGS_TEST_RUN")
    if given:
        return Path(given)
    from gags.stages.demo import DemoConfig, run_demo

    root = tmp_path_factory.mktemp("reduced")
    cfg = DemoConfig.reduced(root / "run", baselines=(), queries=(), cache_dir=root / "cache")
    run_demo(cfg)
    return cfg.out
