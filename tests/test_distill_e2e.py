"""``gags distill`` end to end on a small synthetic scene with the oracle segmenter and encoder.

One prepared run (ground-truth splats imported, GaS prompts, oracle masks and features) is shared
by the tests; each method distils into its own copy of it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from gags.baselines.methods import distill_method as named_method
from gags.cli import main
from gags.distill.field import LanguageField
from gags.distill.langsplat import LangSplat
from gags.errors import GagsError
from gags.runfolder import RunFolder
from gags.splats.ply import load_ply
from gags.stages.distill import DistillConfig, distill

ITERATIONS = 300
BACKEND = "dense"  # exact and fastest at these tiny sizes


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> tuple[Path, Path]:
    """(prepared run folder, scene folder) of a small synthetic scene."""
    from gags.stages.prepare import PrepareConfig, prepare
    from gags.stages.train_rgb import import_ground_truth
    from gags.synthetic.generate import SyntheticConfig, generate_scene
    from gags.synthetic.oracle_encoder import OracleEncoder
    from gags.synthetic.oracle_segmenter import OracleSegmenter

    root = tmp_path_factory.mktemp("distill_e2e")
    scene = generate_scene(
        SyntheticConfig(
            seed=0,
            width=80,
            height=60,
            n_far=6,
            n_mid=6,
            near_per_object=1,
            n_label_frames=6,
            density=0.3,
            cache_dir=root / "cache",
        )
    )
    run = root / "prepared"
    import_ground_truth(scene, run)
    prepare(
        PrepareConfig(run=run, segmenter="oracle", encoder="oracle", device="cpu", seed=0),
        segmenter=OracleSegmenter(scene, seed=0),
        encoder=OracleEncoder(scene, seed=0, device="cpu"),
    )
    return run, scene


def _copy_run(prepared: Path, dst: Path) -> Path:
    shutil.copytree(prepared, dst)
    return dst


def _miou(run: Path, scene: Path) -> float:
    from gags.stages.evaluate import EvalConfig, evaluate

    labels = scene / "labels_hierarchy"  # every region of every level, as this test was written for
    return evaluate(EvalConfig(run=run, labels=labels, box_size=6, device="cpu"))["overall"]["miou"]


@pytest.mark.slow  # two short distillations + evaluations
def test_gags_beats_its_own_unconverged_self(prepared, tmp_path):
    """More steps help and the loss curve flattens (issue 8: a ranking against the baselines is the
    bed's to decide, not a test's)."""
    run, scene = prepared
    results = {}
    for steps in (ITERATIONS // 10, ITERATIONS):
        folder = _copy_run(run, tmp_path / f"gags{steps}")
        stats = distill(DistillConfig(run=folder, iterations=steps, progress=False, backend=BACKEND))
        assert np.isfinite(stats["distill"]) and len(stats["curve"]) == steps
        results[steps] = (_miou(folder, scene), stats)
    assert results[ITERATIONS][0] > results[ITERATIONS // 10][0], results
    curve = [c["distill"] for c in results[ITERATIONS][1]["curve"]]
    assert np.mean(curve[-50:]) < 0.8 * np.mean(curve[:50])
    assert (RunFolder(tmp_path / f"gags{ITERATIONS}").root / "distill_curve.json").exists()


def test_distill_outputs_and_language_field_api(prepared, tmp_path):
    run, _ = prepared
    folder = _copy_run(run, tmp_path / "gags")
    main(
        [
            str(x)
            for x in [
                "distill",
                folder,
                "--iterations",
                "20",
                "--checkpoint-every",
                "10",
                "--backend",
                BACKEND,
            ]
        ]
    )
    rf = RunFolder(folder)
    payload = torch.load(rf.language, weights_only=True)
    splats = load_ply(rf.splats)
    assert payload["features"].shape == (len(splats), 16)
    assert payload["method"] == "gags" and payload["encoder"]["kind"] == "oracle"
    assert payload["features"].abs().sum() > 0  # the features moved away from their zero init
    with_lang = load_ply(rf.splats_language)
    assert with_lang.feature_names == [f"semantic_{i}" for i in range(16)]
    torch.testing.assert_close(with_lang.features, payload["features"])

    field = LanguageField.load(rf.language)
    assert field.levels == ("gags",) and field.method == "gags"
    from gags.scene.cameras import stack_cameras
    from gags.scene.load import load_run_scene

    cams = load_run_scene(rf).train_cameras[:2]
    viewmats, Ks = stack_cameras([c.scaled(4) for c in cams])
    w, h = cams[0].scaled(4).width, cams[0].scaled(4).height
    maps = field.render_feature_maps(viewmats, Ks, w, h, backend=BACKEND)
    assert len(maps) == 1 and maps[0].shape == (2, h, w, payload["embed_dim"])
    norms = maps[0].norm(dim=-1)
    torch.testing.assert_close(norms, torch.ones_like(norms), atol=1e-4, rtol=0)
    (gf,) = field.gaussian_features()
    assert gf.shape == (len(splats), payload["embed_dim"])


def test_resume_continues_to_the_same_result(prepared, tmp_path, monkeypatch):
    import gags.distill.gad as train_module

    run, _ = prepared
    straight = _copy_run(run, tmp_path / "straight")
    distill(DistillConfig(run=straight, iterations=12, checkpoint_every=6, progress=False, backend=BACKEND))

    resumed = _copy_run(run, tmp_path / "resumed")
    calls = {"n": 0}
    real_loss = train_module.gad_loss

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 9:
            raise KeyboardInterrupt
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(train_module, "gad_loss", interrupted)
    with pytest.raises(KeyboardInterrupt):
        distill(
            DistillConfig(run=resumed, iterations=12, checkpoint_every=6, progress=False, backend=BACKEND)
        )
    assert not RunFolder(resumed).language.exists()
    monkeypatch.setattr(train_module, "gad_loss", real_loss)
    stats = distill(
        DistillConfig(
            run=resumed, iterations=12, checkpoint_every=6, resume=True, progress=False, backend=BACKEND
        )
    )
    assert stats["steps_run"] == 6
    a = torch.load(RunFolder(straight).language, weights_only=True)["features"]
    b = torch.load(RunFolder(resumed).language, weights_only=True)["features"]
    torch.testing.assert_close(a, b)
    with pytest.raises(GagsError, match="method"):
        distill(
            DistillConfig(
                run=resumed,
                iterations=14,
                resume=True,
                method=named_method("average"),
                progress=False,
                backend=BACKEND,
            )
        )


def test_langsplat_three_fields(prepared, tmp_path):
    run, _ = prepared
    folder = _copy_run(run, tmp_path / "langsplat")
    distill(
        DistillConfig(
            run=folder,
            method=LangSplat(autoencoder_epochs=2),
            iterations=10,
            progress=False,
            backend=BACKEND,
        )
    )
    field = LanguageField.load(RunFolder(folder).language)
    assert field.levels == ("subpart", "part", "whole")
    assert [tuple(f.shape[1:]) for f in field.fields] == [(3,)] * 3
    feats = field.gaussian_features()
    assert len(feats) == 3 and all(f.shape[1] == field.embed_dim for f in feats)
    assert len(load_ply(RunFolder(folder).splats_language).feature_names) == 9


def test_missing_prepare_outputs_name_the_file(prepared, tmp_path):
    run, _ = prepared
    folder = _copy_run(run, tmp_path / "broken")
    victim = sorted((folder / "segments").glob("*.npz"))[0]
    victim.unlink()
    with pytest.raises(GagsError, match=victim.name):
        distill(DistillConfig(run=folder, iterations=1, progress=False, backend=BACKEND))
    np.savez(victim, maps=np.zeros((2, 3, 3), np.int32))
    with pytest.raises(GagsError, match="shape"):
        distill(DistillConfig(run=folder, iterations=1, progress=False, backend=BACKEND))
    assert not RunFolder(folder).language.exists()


def test_cached_render_trains_the_same_field_as_rasterising(prepared, tmp_path):
    run, _ = prepared
    fields = []
    for cache in (True, False):
        folder = _copy_run(run, tmp_path / f"cache{cache}")
        distill(
            DistillConfig(
                run=folder,
                iterations=6,
                views_per_step=2,
                pixels_per_view=500,
                cache_render=cache,
                progress=False,
                backend=BACKEND,
            )
        )
        fields.append(torch.load(RunFolder(folder).language, weights_only=True)["features"])
    torch.testing.assert_close(fields[0], fields[1], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("level", [0, 2])
def test_level_floors_find_the_level_whose_targets_agree_across_views(prepared, tmp_path, level):
    """Make one level's targets identical in every view: its Eq. 3 floor drops to 0 and it is the
    lowest for every subpart."""
    from gags.synthetic.granularity import level_floors

    run_dir, scene = prepared
    run = _copy_run(run_dir, tmp_path / "run")
    for path in sorted((run / "features").glob("*.npz")):
        with np.load(path) as data:
            arrays = dict(data)
        same = np.zeros(arrays["features"].shape[1], dtype=arrays["features"].dtype)
        same[0] = 1.0
        arrays["features"][arrays["levels"] == level] = same
        np.savez_compressed(path, **arrays)
    floors = level_floors(run, scene)
    name = ("subpart", "part", "whole")[level]
    assert floors["scene"]["floor"][name] == pytest.approx(0.0, abs=1e-3)
    others = [v for k, v in floors["scene"]["floor"].items() if k != name]
    assert min(others) > 0.05
    counts = floors["scene"]["lowest_for_subparts"]  # ties: a subpart seen in one view fits every level
    assert counts[name] >= 0.9 * sum(counts.values()) > 0
