"""Several ranks on one run folder: ``torchrun --nproc-per-node 2`` (gloo, CPU) on the reduced
synthetic scene, against one process; plus the sharding, streaming and sampling pieces on their own.

- prepare: the per-image files of two ranks are byte-identical to one process's, a half-done run
  (missing, corrupt and stray temporary files, as a killed rank leaves) is finished, and rank 0
  records the stage;
- distill: two ranks with one view each per step follow the same loss curve and reach the same
  field as one process with two views per step; a crash after a checkpoint resumes to that result;
- the run folder's lock: rank 0 holds it for the job (no rank is refused by another), a live
  holder outside the job refuses every rank with the same message.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gags import distributed as dist
from gags.distill.parallel import DataParallel, ShardedSampler
from gags.distill.targets import ViewTargetStore, mask_features
from gags.distill.views import ViewSampler, load_all_view_targets
from gags.runfolder import RunFolder

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("distributed_worker.py")
ITERATIONS = 16
TOLERANCE = 1e-6  # loss curve, measured: 0 on this CPU (gloo's sum of two gradients is the same addition)
# per-Gaussian features: Adam (eps 1e-15) turns a rounding-level gradient of a barely seen Gaussian into a
# full step of the learning rate (3e-2 under the short schedule); measured 8.8e-6 on 10 of 22,352 values
FEATURE_TOLERANCE = 1e-4


def _torchrun() -> list[str]:
    exe = Path(sys.executable).with_name("torchrun")
    found = str(exe) if exe.exists() else shutil.which("torchrun")
    if found is None or not torch.distributed.is_available():
        pytest.skip("torchrun (torch.distributed) is not available")
    return [found, "--standalone", "--nproc-per-node", "2"]


def _run_torchrun(args: list[str]) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    env.pop("WORLD_SIZE", None)
    done = subprocess.run(_torchrun() + args, env=env, capture_output=True, text=True, timeout=240)
    if done.returncode != 0:
        tail = done.stderr[-4000:]
        raise AssertionError(f"torchrun {args} failed ({done.returncode}):\n{done.stdout}\n{tail}")
    return done


def _hashes(run: Path) -> dict[str, str]:
    """sha256 of every per-image file (temporary files, named ``.*``, left out)."""
    files = sorted((run / "segments").glob("[!.]*.npz")) + sorted((run / "features").glob("[!.]*.npz"))
    return {f"{f.parent.name}/{f.name}": hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """The reduced demo scene (11 views, 64 x 48), ground-truth splats, prepared in this process."""
    from gags.stages.demo import DemoConfig
    from gags.stages.prepare import PrepareConfig, prepare
    from gags.stages.train_rgb import import_ground_truth
    from gags.synthetic.generate import generate_scene

    root = tmp_path_factory.mktemp("distributed")
    scene = generate_scene(DemoConfig.reduced(root / "run", cache_dir=root / "cache").synthetic())
    run = root / "run"
    import_ground_truth(scene, run)
    prepare(PrepareConfig(run=run, segmenter="oracle", encoder="oracle", device="cpu", seed=0))
    return run


# ----------------------------------------------------------------------------- pieces, one process


def test_shard_partitions_in_a_fixed_order(monkeypatch):
    items = list(range(11))
    assert dist.shard(items) == items and dist.is_main() and not dist.is_distributed()
    shares = []
    for r in range(3):
        monkeypatch.setenv("RANK", str(r))
        monkeypatch.setenv("WORLD_SIZE", "3")
        shares.append(dist.shard(items))
    assert shares == [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8]]
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    assert dist.filter_sharded(items, lambda x: x % 2 == 0) == [0, 2, 4, 6, 8, 10]


def test_sharded_sampler_splits_the_single_process_order():
    one = ViewSampler(7, seed=3)
    serial = [one.next() for _ in range(20)]
    ranks = [ShardedSampler(ViewSampler(7, seed=3), r, 2) for r in range(2)]
    per_step = [[s.next() for s in ranks] for _ in range(10)]
    assert [i for step in per_step for i in step] == serial
    double = ShardedSampler(ViewSampler(7, seed=3), 0, 1, views_per_rank=2)
    assert [double.next() for _ in range(20)] == serial
    assert double.state_dict()["order"] == ranks[0].state_dict()["order"]
    pairs = [ShardedSampler(ViewSampler(7, seed=3), r, 2, views_per_rank=2) for r in range(2)]
    per_step = [[s.next() for s in pairs for _ in range(2)] for _ in range(5)]
    assert [i for step in per_step for i in step] == serial


def test_view_target_store_streams_the_same_targets(prepared):
    from gags.scene.load import load_run_scene

    run = RunFolder(prepared)
    cams = load_run_scene(run).train_cameras
    everything = load_all_view_targets(run, cams, 2.0)
    store = ViewTargetStore(run, cams, 2.0, cache_size=2)
    assert store.loads == len(cams) and len(store) == len(cams) and store.embed_dim == 384
    for i in [3, 0, 3, 5, 0]:
        a, b = store[i], everything[i]
        assert (a.camera.name, a.camera.width, a.camera.height) == (b.camera.name, 32, 24)
        assert torch.equal(a.maps, b.maps) and torch.equal(a.features, b.features)
        assert torch.equal(a.valid, b.valid)
    assert len(store._cache) <= 2
    loads = store.loads
    store.prefetch(8)
    assert torch.equal(store[8].maps, everything[8].maps) and store.loads == loads + 1
    store.close()
    assert torch.equal(mask_features(store), torch.cat([v.features for v in everything]))
    capped = mask_features(store, max_rows=10, seed=1)
    assert capped.shape == (10, 384) and torch.equal(capped, mask_features(everything, 10, seed=1))


def test_two_views_per_step_follow_the_mean_loss_of_the_two(prepared):
    """The loop with the data-parallel hooks (the identity in one process) and two views per step
    takes the step of the mean loss of the two: what two ranks with one view each average to."""
    from gags.distill.gad import GaD
    from gags.distill.methods import DistillContext
    from gags.distill.render_cache import view_renderers
    from gags.distill.train import LoopState, render_field, train_field
    from gags.stages.distill import load_frozen_splats, load_training_views

    run, cpu, steps = RunFolder(prepared), torch.device("cpu"), 4
    gaussians = load_frozen_splats(run, cpu)
    views = load_training_views(run, 2.0, cpu)

    def trainer():
        ctx = DistillContext(len(gaussians), views, views.embed_dim, 16, steps, 0, cpu)
        ctx.schedule = "reference"  # constant rates: the manual loop below need not schedule them
        return GaD().trainer(ctx)

    hooked = trainer()
    parallel = DataParallel(hooked, views_per_rank=2, store=views)
    state = LoopState(0, parallel.sampler(ViewSampler(len(views), 0)))
    parallel.start()
    train_field(
        hooked,
        view_renderers(gaussians, views.view_cameras, "dense", cache=False),
        views,
        steps,
        state,
        schedule="reference",
        views_per_step=2,
        progress=False,
        after_backward=parallel.after_backward,
        first_draw=parallel.first_draw,
    )
    assert parallel.views_per_step == 2 and parallel.first_draw == 0

    manual, sampler = trainer(), ViewSampler(len(views), 0)
    for step in range(steps):
        losses = []
        for i in (sampler.next(), sampler.next()):
            rendered = render_field(gaussians, manual.channels(), views[i].camera, "dense")
            losses.append(manual.loss(rendered, views[i], i, step / steps)[0])
        for opt in manual.optimizers:
            opt.zero_grad(set_to_none=True)
        (sum(losses) / 2).backward()
        for opt in manual.optimizers:
            opt.step()
    assert hooked.field.abs().sum() > 0
    torch.testing.assert_close(hooked.field, manual.field, rtol=1e-5, atol=1e-7)
    for a, b in zip(hooked.decoders.parameters(), manual.decoders.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


# ----------------------------------------------------------------------------- torchrun, two ranks


def test_prepare_two_ranks_byte_identical_and_finishes_a_crashed_run(prepared, tmp_path):
    reference = _hashes(prepared)
    run = tmp_path / "run"
    shutil.copytree(prepared, run)
    segments = sorted((run / "segments").glob("*.npz"))
    for f in segments[2:]:  # a crashed run: most views missing ...
        f.unlink()
    segments[1].write_bytes(segments[1].read_bytes()[:100])  # ... one cut short (not atomic: worse)
    leftover = run / "segments" / ".frame_0000.k1ll3d_0.tmp.npz"
    leftover.write_bytes(b"half")  # ... a killed rank's temporary file
    config = json.loads((run / "config.json").read_text())
    del config["prepare"]
    (run / "config.json").write_text(json.dumps(config))

    args = ["-m", "gags", "prepare", str(run), "--segmenter", "oracle", "--encoder", "oracle", "--seed", "0"]
    done = _run_torchrun(args)
    assert _hashes(run) == reference
    assert "prepare" in RunFolder(run).read_config() and RunFolder(run).finished("prepare")
    assert not leftover.exists() and not (run / ".gags.lock").exists()  # rank 0 cleared and let go
    assert f"gags prepare: {len(segments) - 1} done, 1 already there" in done.stdout, done.stdout


@pytest.fixture(scope="module")
def one_process_two_views(prepared, tmp_path_factory) -> tuple[torch.Tensor, list[float]]:
    """(features, loss curve) of one process rendering two views per step (the reference)."""
    from gags.stages.distill import DistillConfig, distill

    run = tmp_path_factory.mktemp("reference") / "run"
    shutil.copytree(prepared, run)
    stats = distill(
        DistillConfig(
            run=run,
            iterations=ITERATIONS,
            views_per_step=2,
            progress=False,
            backend="dense",
            device="cpu",
        )
    )
    assert stats["views_per_step"] == 2 and stats["ranks"] == 1
    features = torch.load(RunFolder(run).language, weights_only=True)["features"]
    return features, [record["loss"] for record in stats["curve"]]


def test_distill_two_ranks_match_one_process_with_two_views_per_step(
    prepared, one_process_two_views, tmp_path
):
    features, curve = one_process_two_views
    run = tmp_path / "run"
    shutil.copytree(prepared, run)
    out = tmp_path / "curve.json"
    done = _run_torchrun([str(WORKER), str(run), "--iterations", str(ITERATIONS), "--curve", str(out)])
    stats = json.loads(done.stdout.strip().splitlines()[-1])
    assert stats["views_per_step"] == 2 and stats["steps_run"] == ITERATIONS and stats["ranks"] == 2
    two_ranks = json.loads(out.read_text())
    assert len(two_ranks) == len(curve) == ITERATIONS
    assert max(abs(a - b) for a, b in zip(two_ranks, curve, strict=True)) <= TOLERANCE * max(curve)
    payload = torch.load(RunFolder(run).language, weights_only=True)
    torch.testing.assert_close(payload["features"], features, atol=FEATURE_TOLERANCE, rtol=FEATURE_TOLERANCE)
    assert not list((run / "checkpoints").glob(".*tmp*"))  # one writer, nothing left half-written
    assert RunFolder(run).finished("distill")  # recorded once, with its fingerprints
    assert not (run / ".gags.lock").exists()  # rank 0 let go of the lock


def test_distill_two_ranks_resume_after_a_crash(prepared, one_process_two_views, tmp_path):
    features, _ = one_process_two_views
    run = tmp_path / "run"
    shutil.copytree(prepared, run)
    args = [str(WORKER), str(run), "--iterations", str(ITERATIONS), "--checkpoint-every", "8"]
    done = _run_torchrun([*args, "--interrupt-at", "11"])  # crash in step 10, then --resume
    stats = json.loads(done.stdout.strip().splitlines()[-1])
    assert stats["crash_checkpoint_step"] == 8 and not stats["crash_language_exists"]
    assert stats["steps_run"] == ITERATIONS - 8
    payload = torch.load(RunFolder(run).language, weights_only=True)
    torch.testing.assert_close(payload["features"], features, atol=FEATURE_TOLERANCE, rtol=FEATURE_TOLERANCE)


def test_a_live_holder_outside_the_job_refuses_every_rank(prepared, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(prepared, run)
    with RunFolder(run).lock("train_rgb"):  # this process: another writer, alive
        done = _run_torchrun([str(WORKER), str(run), "--lock-probe"])
    probes = sorted(
        (json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")),
        key=lambda p: p["rank"],
    )
    assert [p["rank"] for p in probes] == [0, 1], done.stdout
    assert probes[0]["refused"] == probes[1]["refused"]
    assert "being written by `gags train-rgb`" in probes[0]["refused"]
