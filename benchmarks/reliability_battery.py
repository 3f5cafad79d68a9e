"""A hostile and clumsy user's battery against run folders (issue 10); prints JSON counts.

    python benchmarks/reliability_battery.py            # every case (a few minutes on a CPU)
    python benchmarks/reliability_battery.py --list     # the case names
    python benchmarks/reliability_battery.py -k lock    # only cases whose name contains "lock"

One small finished run (synthetic scene, ground-truth splats imported, oracle prepare, 5 distill steps)
is built once; each case works on a fresh copy, damages something or passes a bad option, runs
``gags.cli.main`` in this process and classifies the outcome:

- ``handled_cleanly``: an expected error gave exit code 2 and one ``gags: error:`` line naming the file
  (or option) at fault, and left the run folder's files byte-identical; an expected success exited 0
  and its follow-up check held;
- ``tracebacks``: an exception escaped the CLI;
- ``silently_accepted``: exit code 0 where an error was due;
- ``data_loss``: a file of the run folder changed or vanished, or outputs were lost;
- ``code_executed``: a crafted pickle created its marker file;
- ``unclear``: exit code 2, but the message is not one line naming the file, or new files were left.

Read-only folders and full disks use a real bind mount / small tmpfs when this runs as root and
``mount`` works, else mocked ``EROFS`` / ``ENOSPC`` (the JSON says which).
"""

from __future__ import annotations

import argparse
import builtins
import contextlib
import dataclasses
import errno
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

TINY_SCENE = dict(
    seed=0, width=48, height=36, n_far=2, n_mid=2, near_per_object=1, n_label_frames=2, density=0.2
)
CPU = ["--device", "cpu"]


# ----------------------------------------------------------------------------- context of one case


@dataclasses.dataclass
class Ctx:
    """Paths of one case: its run copy, the scene, a scratch folder; ``vars`` fill ``{name}`` in args."""

    run: Path
    scene: Path
    tmp: Path
    base: Path

    @property
    def vars(self) -> dict[str, Path]:
        return {
            "run": self.run,
            "scene": self.scene,
            "labels": self.tmp / "labels" if (self.tmp / "labels").exists() else self.scene / "labels",
            "gt": self.scene / "gt_splats.ply",
            "tmp": self.tmp,
            "new": self.tmp / "new-run",
            "marker": self.tmp / "code-ran",
        }


@dataclasses.dataclass
class Case:
    name: str
    args: list[str]
    setup: Callable[[Ctx], None] | None = None
    expect: str = "error"  # or "ok"
    names: str | None = "{run}"  # a path (or option) the error line must contain
    check: Callable[[Ctx], str | None] | None = None  # for "ok": a failure category, or None
    patch: Callable[[Ctx], contextlib.AbstractContextManager] | None = None
    identical: bool = True  # an error must leave the run folder's files byte-identical


def digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(Path(root).rglob("*"))
        if p.is_file()
    }


def run_case(case: Case, base: Path, scene: Path, work: Path) -> tuple[str, str]:
    """Run one case -> (category, detail)."""
    from gags.cli import main

    tmp = Path(tempfile.mkdtemp(dir=work))
    ctx = Ctx(run=tmp / "run", scene=scene, tmp=tmp, base=base)
    shutil.copytree(base, ctx.run, copy_function=shutil.copy2)
    try:
        if case.setup is not None:
            try:
                with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                    case.setup(ctx)
            except (Exception, SystemExit) as e:  # the case could not be set up (e.g. an older gags)
                return "battery_error", f"setup: {type(e).__name__}: {e}"[:300]
        before = digest(ctx.run) if ctx.run.is_dir() else {}
        args = [a.format(**ctx.vars) for a in case.args]
        err = io.StringIO()
        code: int | None = 0
        escaped = None
        patch = case.patch(ctx) if case.patch is not None else contextlib.nullcontext()
        timed_out = False
        with patch, contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            signal.signal(signal.SIGALRM, _alarm)
            signal.alarm(CASE_SECONDS)
            try:
                main(args)
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 1
            except CaseTimeout:
                timed_out = True
            except BaseException as e:  # noqa: BLE001 - that is what is being counted
                escaped = f"{type(e).__name__}: {e}"
                traceback.print_exc(file=err)
            finally:
                signal.alarm(0)
        text = err.getvalue()
        if timed_out:  # it ran on (e.g. training) instead of refusing
            return (
                "silently_accepted" if case.expect == "error" else "failed"
            ), f"still running after {CASE_SECONDS} s"
        if (ctx.tmp / "code-ran").exists():
            return "code_executed", text[-300:]
        if escaped or "Traceback" in text:
            return "tracebacks", (escaped or text)[-300:]
        after = digest(ctx.run) if ctx.run.is_dir() else {}
        if case.expect == "ok":
            if code != 0:
                return "failed", text[-300:]
            problem = case.check(ctx) if case.check is not None else None
            return (problem, "follow-up check") if problem else ("handled_cleanly", "")
        if code == 0:
            return "silently_accepted", " ".join(args[:2])
        if any(after.get(k) != v for k, v in before.items()):
            return "data_loss", ", ".join(k for k, v in before.items() if after.get(k) != v)[:300]
        message = text.split("gags: error:")[-1] if "gags: error:" in text else ""
        expected = case.names.format(**ctx.vars) if case.names else ""
        one_line = text.count("gags: error:") == 1 and message.strip() and "\n" not in message.strip()
        if code != 2 or not one_line or expected not in message:
            return "unclear", f"exit {code}: {message.strip()[:300]} (wanted {expected!r})"
        if case.identical and after != before:
            return "unclear", f"left new files: {sorted(set(after) - set(before))[:5]}"
        if (ctx.tmp / "new-run").exists():
            return "unclear", "created the new run folder although it failed"
        return "handled_cleanly", ""
    finally:
        _force_rmtree(tmp)


class CaseTimeout(BaseException):
    """Raised in a case that runs longer than ``CASE_SECONDS``."""


def _alarm(signum: int, frame: Any) -> None:
    raise CaseTimeout


CASE_SECONDS = 60  # set in main()


def _force_rmtree(path: Path) -> None:
    if _MOUNTS.pop(path, False):  # a mount left by an interrupted case
        subprocess.run(["umount", "-l", str(path / "run")], capture_output=True)
    shutil.rmtree(path, ignore_errors=True)


_MOUNTS: dict[Path, bool] = {}


# ----------------------------------------------------------------------------- helpers for setups


class Marker:
    """Unpickling calls ``func(*args)``: a stand-in for arbitrary code that leaves a marker file."""

    def __init__(self, func: Any, *args: Any) -> None:
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


def payloads(marker: Path) -> dict[str, Callable[[Any], Any]]:
    m = str(marker)
    return {
        "open": lambda base: {**base, "x": Marker(builtins.open, m, "w")},
        "system": lambda base: {**base, "x": Marker(os.system, f"touch {m}")},
        "eval": lambda base: {**base, "x": Marker(builtins.eval, f"open({m!r}, 'w')")},
        "nested": lambda base: {**base, "x": [1, {"y": Marker(builtins.exec, f"open({m!r}, 'w')")}]},
        "bare": lambda base: Marker(builtins.open, m, "w"),
    }


def plant_pickle(rel: str, kind: str) -> Callable[[Ctx], None]:
    def setup(ctx: Ctx) -> None:
        path = ctx.run / rel
        base = torch.load(path, weights_only=True)
        torch.save(payloads(ctx.tmp / "code-ran")[kind](base), path)
        refresh_fingerprint(ctx, rel)

    return setup


def refresh_fingerprint(ctx: Ctx, rel: str) -> None:
    """Record ``rel``'s new content in config.json, so only the content itself can be refused."""
    from gags.runfolder import RunFolder

    folder = RunFolder(ctx.run)
    data = json.loads(folder.config.read_text())
    for entry in data.get("fingerprints", {}).values():
        for side in ("inputs", "outputs"):
            if rel in entry.get(side, {}):
                entry[side][rel] = folder.fingerprint(ctx.run / rel, {})
    folder.config.write_text(json.dumps(data))


def edit_file(rel: str, how: Callable[[bytes], bytes], refresh: bool = False) -> Callable[[Ctx], None]:
    def setup(ctx: Ctx) -> None:
        path = ctx.run / rel
        path.write_bytes(how(path.read_bytes() if path.exists() else b""))
        if refresh:
            refresh_fingerprint(ctx, rel)

    return setup


def edit_config(change: Callable[[dict], Any]) -> Callable[[Ctx], None]:
    def setup(ctx: Ctx) -> None:
        data = json.loads((ctx.run / "config.json").read_text())
        out = change(data)
        (ctx.run / "config.json").write_text(json.dumps(data if out is None else out))

    return setup


def raw_config(content: bytes) -> Callable[[Ctx], None]:
    return lambda ctx: (ctx.run / "config.json").write_bytes(content)


def npz(rel: str, **arrays: Any) -> Callable[[Ctx], None]:
    def setup(ctx: Ctx) -> None:
        with open(ctx.run / rel, "wb") as f:
            np.savez(f, **arrays)

    return setup


def npz_edit(rel: str, change: Callable[[dict], dict]) -> Callable[[Ctx], None]:
    def setup(ctx: Ctx) -> None:
        with np.load(ctx.run / rel) as data:
            arrays = {k: data[k] for k in data.files}
        with open(ctx.run / rel, "wb") as f:
            np.savez(f, **change(arrays))

    return setup


def torch_file(rel: str, make: Callable[[Any], Any], refresh: bool = False) -> Callable[[Ctx], None]:
    def setup(ctx: Ctx) -> None:
        path = ctx.run / rel
        torch.save(make(torch.load(path, weights_only=True)), path)
        if refresh:
            refresh_fingerprint(ctx, rel)

    return setup


def other_splats(ctx: Ctx) -> Path:
    from gags.splats.ply import load_ply, save_ply

    g = load_ply(ctx.scene / "gt_splats.ply")
    save_ply(ctx.tmp / "other.ply", dataclasses.replace(g, opacity_logits=g.opacity_logits + 0.5))
    return ctx.tmp / "other.ply"


def replace_splats(ctx: Ctx) -> None:
    shutil.copy(other_splats(ctx), ctx.run / "splats.ply")


def other_data_set(ctx: Ctx) -> None:
    dst = ctx.tmp / "other-data"
    shutil.copytree(ctx.scene, dst)
    t = dst / "transforms_train.json"
    data = json.loads(t.read_text())
    for frame in data["frames"]:
        frame["transform_matrix"][0][3] += 0.05
    t.write_text(json.dumps(data))


def cli(*args: Any) -> Callable[[Ctx], None]:
    """A setup step that runs a gags command first (it must succeed)."""

    def setup(ctx: Ctx) -> None:
        from gags.cli import main

        main([str(a).format(**ctx.vars) for a in args])

    return setup


def chain(*steps: Callable[[Ctx], None]) -> Callable[[Ctx], None]:
    def setup(ctx: Ctx) -> None:
        for step in steps:
            step(ctx)

    return setup


def copy_labels(change: Callable[[Path], None]) -> Callable[[Ctx], None]:
    def setup(ctx: Ctx) -> None:
        labels = Path(shutil.copytree(ctx.scene / "labels", ctx.tmp / "labels"))
        change(labels)

    return setup


def first_label(labels: Path) -> Path:
    return sorted(p for p in labels.glob("*.json") if p.name != "levels.json")[0]


def label_json(change: Callable[[dict], None]) -> Callable[[Ctx], None]:
    def edit(labels: Path) -> None:
        path = first_label(labels)
        data = json.loads(path.read_text())
        change(data)
        path.write_text(json.dumps(data))

    return copy_labels(edit)


def camera(**change: Any) -> dict:
    cam = {"name": "extra", "K": [[40.0, 0, 24], [0, 40.0, 18], [0, 0, 1]], "width": 48, "height": 36}
    w2c = np.eye(4)
    w2c[2, 3] = 1.0
    cam["world_to_cam"] = w2c.tolist()
    cam.update(change)
    return cam


def camera_file(content: Any) -> Callable[[Ctx], None]:
    def setup(ctx: Ctx) -> None:
        path = ctx.tmp / "cameras.json"
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content if isinstance(content, str) else json.dumps(content))

    return setup


# ----------------------------------------------------------------------------- file-system faults


def _unmount(path: Path) -> None:
    """Unmount ``path``; lazily when a library still holds a file there open (closed by the GC later)."""
    import gc

    gc.collect()
    if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(path)], check=True)


def _can_mount() -> bool:
    if os.name != "posix" or os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    with tempfile.TemporaryDirectory() as d:
        ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", d], capture_output=True)
        if ok.returncode != 0:
            return False
        subprocess.run(["umount", d], capture_output=True)
    return True


MOUNT = False  # set in main()


@contextlib.contextmanager
def read_only(ctx: Ctx) -> Iterator[None]:
    if MOUNT:
        subprocess.run(["mount", "--bind", str(ctx.run), str(ctx.run)], check=True)
        _MOUNTS[ctx.tmp] = True
        subprocess.run(["mount", "-o", "remount,ro,bind", str(ctx.run)], check=True)
        try:
            yield
        finally:
            _unmount(ctx.run)
            _MOUNTS.pop(ctx.tmp, None)
        return
    root = str(ctx.run.resolve())
    writes = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC
    saved = {n: getattr(os, n) for n in ("open", "mkdir", "unlink", "remove", "rmdir", "replace", "rename")}

    def inside(p: Any) -> bool:
        return os.path.abspath(os.fspath(p)).startswith(root)

    def refuse(p: Any) -> None:
        raise OSError(errno.EROFS, "Read-only file system", os.fspath(p))

    def o(p, flags, *a, **k):
        return refuse(p) if inside(p) and flags & writes else saved["open"](p, flags, *a, **k)

    def mk(p, *a, **k):
        return refuse(p) if inside(p) and not os.path.exists(p) else saved["mkdir"](p, *a, **k)

    def make(name: str) -> Callable:
        return lambda p, *a, **k: refuse(p) if inside(p) else saved[name](p, *a, **k)

    os.open, os.mkdir = o, mk
    for name in ("unlink", "remove", "rmdir", "replace", "rename"):
        setattr(os, name, make(name))
    try:
        yield
    finally:
        for name, fn in saved.items():
            setattr(os, name, fn)


@contextlib.contextmanager
def full_disk(ctx: Ctx) -> Iterator[None]:
    if MOUNT:  # the run on a tmpfs with one page to spare (for the lock file)
        used = sum(-(-p.stat().st_size // 4096) * 4096 for p in ctx.run.rglob("*") if p.is_file())
        real = ctx.tmp / "real-run"
        ctx.run.rename(real)
        ctx.run.mkdir()
        size = used + 4096
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(ctx.run)], check=True)
        _MOUNTS[ctx.tmp] = True
        for p in real.iterdir():
            (shutil.copytree if p.is_dir() else shutil.copy2)(p, ctx.run / p.name)
        try:
            yield
        finally:
            shutil.rmtree(real)
            shutil.copytree(ctx.run, real, copy_function=shutil.copy2)
            _unmount(ctx.run)
            _MOUNTS.pop(ctx.tmp, None)
            ctx.run.rmdir()
            real.rename(ctx.run)
        return
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

    gags.io.open = full_open
    real_replace = os.replace

    def no_room(src, dst, *a, **k):  # files written by libraries (PNG, PLY) fail when committed
        raise OSError(errno.ENOSPC, "No space left on device", os.fspath(dst))

    os.replace = no_room
    try:
        yield
    finally:
        del gags.io.open
        os.replace = real_replace


@contextlib.contextmanager
def live_lock(ctx: Ctx) -> Iterator[None]:
    src = Path(__file__).resolve().parents[1] / "src"
    code = "import sys\nfrom gags.runfolder import RunFolder\nwith RunFolder(sys.argv[1]).lock('distill'):\n"
    code += "    print('held', flush=True)\n    sys.stdin.readline()\n"
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(ctx.run)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        holder.stdout.readline()
        yield
    finally:
        holder.communicate("\n", timeout=60)


@contextlib.contextmanager
def skip_a_view(ctx: Ctx) -> Iterator[None]:
    from gags.stages import prepare as prepare_stage

    real = prepare_stage._prepare_view

    def skip(run, cam, *args, **kwargs):
        if cam.name.startswith("frame_0002"):
            return "no Gaussian is visible in this view"
        return real(run, cam, *args, **kwargs)

    prepare_stage._prepare_view = skip
    try:
        yield
    finally:
        prepare_stage._prepare_view = real


@contextlib.contextmanager
def offline_empty_cache(ctx: Ctx) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "HF_HUB_CACHE")}
    (ctx.tmp / "hf").mkdir()
    os.environ.update(HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(ctx.tmp / "hf"))
    start = time.perf_counter()
    try:
        yield
    finally:
        OFFLINE_SECONDS.append(time.perf_counter() - start)
        for k, v in old.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


OFFLINE_SECONDS: list[float] = []


# ----------------------------------------------------------------------------- follow-up checks


def moved_aside(ctx: Ctx) -> str | None:
    stale = sorted(ctx.run.glob("stale-*"))
    if len(stale) != 1:
        return "data_loss"
    old = digest(ctx.base)
    moved = digest(stale[0])
    for rel in ("language.pt", "splats_language.ply", "segments/frame_0002.npz", "features/frame_0002.npz"):
        if moved.get(rel) != old[rel] or (ctx.run / rel).exists():
            return "data_loss"
    return None


def kept_outputs(ctx: Ctx) -> str | None:
    old, new = digest(ctx.base), digest(ctx.run)
    for rel in ("language.pt", "splats_language.ply", "segments/frame_0002.npz"):
        if new.get(rel) != old[rel]:
            return "data_loss"
    return None if not list(ctx.run.glob("stale-*")) else "data_loss"


def lock_released(ctx: Ctx) -> str | None:
    return None if not (ctx.run / ".gags.lock").exists() else "unclear"


def tmp_removed(ctx: Ctx) -> str | None:
    return None if not list(ctx.run.rglob(".*.tmp*")) else "unclear"


def view_dropped(ctx: Ctx) -> str | None:
    seg = ctx.run / "segments" / "frame_0002.npz"
    return None if not seg.exists() else "silently_accepted"


def query_out_written(ctx: Ctx) -> str | None:
    return None if list((ctx.tmp / "q").glob("*_heatmap.png")) else "failed"


# ----------------------------------------------------------------------------- the cases


def cases() -> list[Case]:
    q = ["query", "{run}", "cup", "--box-size", "3", *CPU]
    ev = ["eval", "{run}", "--labels", "{labels}", "--box-size", "3", *CPU]
    di = ["distill", "{run}", "--iterations", "5", *CPU]
    pr0 = ["prepare", "{run}", "--segmenter", "oracle", "--encoder", "oracle"]
    pr = [*pr0, "--seed", "0", *CPU]
    resume = [
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
        *CPU,
    ]
    imp = ["import", "{gt}", "--data", "{scene}", "--out", "{run}", "--no-evaluate"]
    out: list[Case] = []
    add = out.append

    # 1. opening a run folder never runs code
    for kind in ("open", "system", "eval", "nested", "bare"):
        add(
            Case(
                f"pickle/language.pt/{kind}/query",
                q,
                plant_pickle("language.pt", kind),
                names="{run}/language.pt",
            )
        )
        add(
            Case(
                f"pickle/language.pt/{kind}/eval",
                ev,
                plant_pickle("language.pt", kind),
                names="{run}/language.pt",
            )
        )
        add(
            Case(
                f"pickle/latest.pt/{kind}/resume",
                resume,
                plant_pickle("checkpoints/latest.pt", kind),
                names="{run}/checkpoints/latest.pt",
            )
        )
        add(
            Case(
                f"pickle/distill.pt/{kind}/resume",
                [*di, "--resume"],
                plant_pickle("checkpoints/distill.pt", kind),
                names="{run}/checkpoints/distill.pt",
            )
        )

    # 2. re-runs, stale inputs, resume, locks
    add(
        Case(
            "rerun/train-rgb-over-finished",
            ["train-rgb", "{scene}", "--out", "{run}", "--iterations", "0", *CPU],
            names="{run}/splats.ply",
        )
    )
    add(Case("rerun/import-over-finished", imp, names="{run}/splats.ply"))
    add(
        Case(
            "rerun/train-rgb-resume-without-checkpoint",
            ["train-rgb", "{scene}", "--out", "{run}", "--resume", *CPU],
            lambda c: (c.run / "checkpoints" / "latest.pt").unlink(),
            names="latest.pt",
        )
    )
    add(Case("rerun/resume-and-overwrite", [*resume, "--overwrite"], names="--overwrite"))
    add(
        Case(
            "rerun/overwrite-same-splats-keeps-outputs",
            [*imp, "--overwrite"],
            expect="ok",
            check=kept_outputs,
        )
    )
    add(
        Case(
            "rerun/overwrite-new-splats-moves-outputs",
            [
                "import",
                "{tmp}/other.ply",
                "--data",
                "{scene}",
                "--out",
                "{run}",
                "--no-evaluate",
                "--overwrite",
            ],
            lambda c: other_splats(c),
            expect="ok",
            check=moved_aside,
        )
    )
    after_overwrite = chain(
        lambda c: other_splats(c),
        cli(
            "import", "{tmp}/other.ply", "--data", "{scene}", "--out", "{run}", "--no-evaluate", "--overwrite"
        ),
    )
    add(Case("stale/distill-after-overwrite", di, after_overwrite, names="gags prepare"))
    add(Case("stale/query-after-overwrite", q, after_overwrite, names="{run}/language.pt"))
    add(Case("stale/eval-after-overwrite", ev, after_overwrite, names="{run}/language.pt"))
    add(Case("stale/prepare-after-overwrite-runs", pr, after_overwrite, expect="ok"))
    for stage, args in (("prepare", pr), ("distill", di), ("query", q), ("eval", ev)):
        add(Case(f"changed/splats-by-hand/{stage}", args, replace_splats, names="{run}/splats.ply"))
    add(
        Case(
            "changed/language.pt-from-elsewhere/query",
            q,
            torch_file("language.pt", lambda p: {**p, "features": p["features"] * 0.5}),
            names="{run}/language.pt",
        )
    )
    add(
        Case(
            "changed/language.pt-from-elsewhere/eval",
            ev,
            torch_file("language.pt", lambda p: {**p, "features": p["features"] * 0.5}),
            names="{run}/language.pt",
        )
    )
    add(Case("changed/segments-settings/prepare-grid", [*pr, "--prompts.grid", "4"], names="{run}/segments"))
    add(
        Case(
            "changed/segments-settings/prepare-mode",
            [*pr, "--prompts.mode", "uniform"],
            names="{run}/segments",
        )
    )
    add(Case("changed/segments-encoder/prepare-seed", [*pr0, "--seed", "7", *CPU], names="{run}/features"))
    add(
        Case(
            "resume/another-data-set",
            [*resume[:1], "{tmp}/other-data", *resume[2:]],
            other_data_set,
            names="latest.pt",
        )
    )
    for flag, value in (
        ("--sh-degree", "2"),
        ("--seed", "3"),
        ("--iterations", "10"),
        ("--densify.max-gaussians", "9"),
    ):
        add(Case(f"resume/other-setting{flag}", [*resume, flag, value], names="latest.pt"))
    add(Case("resume/same-settings-keeps-outputs", resume, expect="ok", check=kept_outputs))
    add(Case("resume/distill-other-feature-dim", [*di, "--resume", "--feature-dim", "8"], names="distill.pt"))
    add(
        Case(
            "interrupted/prepare-then-distill",
            di,
            edit_config(lambda d: d["fingerprints"].__setitem__("prepare", {"running": True})),
            names="gags prepare",
        )
    )
    for name, args in (
        ("train-rgb", [*imp, "--overwrite"]),
        ("prepare", [*pr, "--overwrite"]),
        ("distill", di),
        ("query", q),
        ("eval", ev),
    ):
        add(Case(f"lock/live-holder/{name}", args, patch=live_lock, names="{run}/.gags.lock"))
    dead = subprocess.Popen(["true"])
    dead.wait()
    add(
        Case(
            "lock/dead-holder-taken-over",
            ev,
            lambda c: (c.run / ".gags.lock").write_text(json.dumps({"pid": dead.pid, "stage": "distill"})),
            expect="ok",
            check=lock_released,
        )
    )
    add(
        Case(
            "lock/garbage-lock-taken-over",
            ev,
            lambda c: (c.run / ".gags.lock").write_bytes(b"\x00\xff"),
            expect="ok",
            check=lock_released,
        )
    )
    add(
        Case(
            "tmp/leftovers-removed",
            ev,
            lambda c: [
                (c.run / n).write_bytes(b"half")
                for n in (".language.k2j4h5g6.tmp.pt", "segments/.frame_0002.ab_cd123.tmp.npz")
            ],
            expect="ok",
            check=tmp_removed,
        )
    )
    add(
        Case(
            "prepare/overwrite-drops-view-it-cannot-redo",
            [*pr, "--overwrite"],
            patch=skip_a_view,
            expect="ok",
            check=view_dropped,
        )
    )

    strip = edit_config(lambda d: d.__delitem__("fingerprints"))
    add(Case("legacy/no-fingerprints/query", q, strip, expect="ok"))
    add(Case("legacy/no-fingerprints/eval-then-query", q, chain(strip, cli(*ev)), expect="ok"))
    add(Case("legacy/no-fingerprints/distill", di, strip, expect="ok"))

    # 3. damaged files read by distill
    for rel in ("segments/frame_0002.npz", "features/frame_0003.npz"):
        for dmg, how in (
            ("truncated", lambda b: b[: len(b) // 2]),
            ("empty", lambda b: b""),
            ("garbage", lambda b: os.urandom(700)),
            ("text", lambda b: b"not a zip file\n"),
        ):
            add(Case(f"npz/{rel.split('/')[0]}/{dmg}", di, edit_file(rel, how), names="{run}/" + rel))
        add(Case(f"npz/{rel.split('/')[0]}/no-arrays", di, npz(rel, other=np.zeros(3)), names="{run}/" + rel))
    seg, feat = "segments/frame_0002.npz", "features/frame_0002.npz"
    add(
        Case(
            "npz/segments/float-maps",
            di,
            npz_edit(seg, lambda a: {**a, "maps": a["maps"].astype(np.float32)}),
            names="{run}/" + seg,
        )
    )
    add(
        Case(
            "npz/segments/two-levels",
            di,
            npz_edit(seg, lambda a: {**a, "maps": a["maps"][:2]}),
            names="{run}/" + seg,
        )
    )
    add(
        Case(
            "npz/segments/ids-out-of-range",
            di,
            npz_edit(seg, lambda a: {**a, "maps": a["maps"] + 10_000}),
            names="{run}/" + seg,
        )
    )
    add(
        Case(
            "npz/segments/wrong-size",
            di,
            npz_edit(seg, lambda a: {**a, "maps": a["maps"][:, :10, :10]}),
            names="{run}/" + seg,
        )
    )
    add(
        Case(
            "npz/features/strings",
            di,
            npz(feat, features=np.array(["a"]), levels=np.zeros(1, np.int8)),
            names="{run}/" + feat,
        )
    )
    add(
        Case(
            "npz/features/nan",
            di,
            npz_edit(feat, lambda a: {**a, "features": a["features"] * np.nan}),
            names="{run}/" + feat,
        )
    )
    add(
        Case(
            "npz/features/no-rows",
            di,
            npz_edit(feat, lambda a: {**a, "features": a["features"][:0]}),
            names="{run}/" + feat,
        )
    )
    add(Case("npz/segments/missing-file", di, lambda c: (c.run / seg).unlink(), names="{run}/" + seg))

    # config.json
    configs: dict[str, Callable[[Ctx], None]] = {
        "binary": raw_config(b"\x80\x81\xfe\xff" * 16),
        "empty": raw_config(b""),
        "null": raw_config(b"null"),
        "list": raw_config(b"[1, 2]"),
        "number": raw_config(b"42"),
        "string": raw_config(b'"run"'),
        "truncated": raw_config(b'{"scene": {"data": '),
        "scene-null": edit_config(lambda d: d.__setitem__("scene", None)),
        "scene-list": edit_config(lambda d: d.__setitem__("scene", [1, 2])),
        "scene-data-int": edit_config(lambda d: d["scene"].__setitem__("data", 5)),
        "scene-downscale-str": edit_config(lambda d: d["scene"].__setitem__("downscale", "x")),
        "scene-holdout-bool": edit_config(lambda d: d["scene"].__setitem__("holdout_every", True)),
        "scene-background-2": edit_config(lambda d: d["scene"].__setitem__("background", [0, 0])),
        "scene-unknown-key": edit_config(lambda d: d["scene"].__setitem__("colour", 1)),
        "prepare-list": edit_config(lambda d: d.__setitem__("prepare", [1])),
        "prepare-encoder-str": edit_config(lambda d: d["prepare"].__setitem__("encoder", "clip")),
        "fingerprints-list": edit_config(lambda d: d.__setitem__("fingerprints", [1])),
        "fingerprints-entry-str": edit_config(lambda d: d["fingerprints"].__setitem__("prepare", "done")),
    }
    reads = {"prepare": pr, "distill": di, "query": q, "eval": ev}
    skip = {"prepare-list": {"query", "eval"}, "prepare-encoder-str": {"query", "eval", "prepare"}}
    for variant, setup in configs.items():
        for stage, args in reads.items():
            if stage in skip.get(variant, set()):
                continue
            add(Case(f"config/{variant}/{stage}", args, setup, names="{run}/config.json"))

    # checkpoints and the language field
    for what, make in (
        ("list", lambda s: [1, 2, 3]),
        ("no-keys", lambda s: {"step": 3}),
        ("bad-step", lambda s: {**s, "step": "three"}),
        ("str", lambda s: "checkpoint"),
    ):
        add(
            Case(
                f"checkpoint/latest/{what}",
                resume,
                torch_file("checkpoints/latest.pt", make),
                names="latest.pt",
            )
        )
        add(
            Case(
                f"checkpoint/distill/{what}",
                [*di, "--resume"],
                torch_file("checkpoints/distill.pt", make),
                names="distill.pt",
            )
        )
    for what, how in (("empty", lambda b: b""), ("truncated", lambda b: b[: len(b) // 3])):
        add(
            Case(
                f"checkpoint/latest/{what}",
                resume,
                edit_file("checkpoints/latest.pt", how),
                names="latest.pt",
            )
        )
        add(
            Case(
                f"checkpoint/distill/{what}",
                [*di, "--resume"],
                edit_file("checkpoints/distill.pt", how),
                names="distill.pt",
            )
        )
    for what, make in (
        ("list", lambda p: [1]),
        ("no-decoder", lambda p: {k: v for k, v in p.items() if k != "decoder"}),
        ("few-rows", lambda p: {**p, "features": p["features"][:5]}),
        ("nan", lambda p: {**p, "features": p["features"] * float("nan")}),
        ("bad-levels", lambda p: {**p, "levels": 3}),
    ):
        add(
            Case(
                f"language/{what}/query",
                q,
                torch_file("language.pt", make, refresh=True),
                names="language.pt",
            )
        )
    for what, how in (("empty", lambda b: b""), ("truncated", lambda b: b[: len(b) // 2])):
        add(
            Case(
                f"language/{what}/query", q, edit_file("language.pt", how, refresh=True), names="language.pt"
            )
        )

    # PLY files
    def ply_zero(ctx: Ctx) -> None:
        from plyfile import PlyData, PlyElement

        names = [
            "x",
            "y",
            "z",
            "f_dc_0",
            "f_dc_1",
            "f_dc_2",
            "opacity",
            "scale_0",
            "scale_1",
            "scale_2",
            "rot_0",
            "rot_1",
            "rot_2",
            "rot_3",
        ]
        data = np.zeros(0, dtype=[(n, "f4") for n in names])
        PlyData([PlyElement.describe(data, "vertex")]).write(str(ctx.tmp / "bad.ply"))

    def ply_nan(ctx: Ctx) -> None:
        from gags.splats.ply import load_ply, save_ply

        g = load_ply(ctx.scene / "gt_splats.ply")
        g.means[3, 0] = float("nan")
        save_ply(ctx.tmp / "bad.ply", g)

    plys = {
        "zero-vertices": ply_zero,
        "nan-position": ply_nan,
        "garbage": lambda c: (c.tmp / "bad.ply").write_bytes(os.urandom(300)),
        "truncated": lambda c: (c.tmp / "bad.ply").write_bytes(
            (c.scene / "gt_splats.ply").read_bytes()[:5000]
        ),
        "empty": lambda c: (c.tmp / "bad.ply").write_bytes(b""),
    }
    for what, make in plys.items():
        add(
            Case(
                f"ply/{what}/import-new",
                ["import", "{tmp}/bad.ply", "--data", "{scene}", "--out", "{new}"],
                make,
                names="{tmp}/bad.ply",
            )
        )
        for stage, args in (("distill", di), ("query", q)):
            add(
                Case(
                    f"ply/{what}/splats.ply/{stage}",
                    args,
                    chain(make, lambda c: shutil.copy(c.tmp / "bad.ply", c.run / "splats.ply")),
                    names="{run}/splats.ply",
                )
            )
    add(
        Case(
            "ply/missing/import-new",
            ["import", "{tmp}/absent.ply", "--data", "{scene}", "--out", "{new}"],
            names="{tmp}/absent.ply",
        )
    )

    # 3b. label files read by eval
    def set_(path: list, value: Any) -> Callable[[dict], None]:
        def change(d: dict) -> None:
            target = d
            for p in path[:-1]:
                target = target[p]
            target[path[-1]] = value

        return change

    labels = {
        "invalid-utf8": copy_labels(lambda L: first_label(L).write_bytes(b'{"info": "\xff\xfe"}')),
        "not-json": copy_labels(lambda L: first_label(L).write_text("{info")),
        "a-list": copy_labels(lambda L: first_label(L).write_text("[]")),
        "nan-vertex": label_json(lambda d: d["objects"][0]["segmentation"][0].__setitem__(0, float("nan"))),
        "inf-vertex": label_json(lambda d: d["objects"][0]["segmentation"][0].__setitem__(1, float("inf"))),
        "nan-bbox": label_json(lambda d: d["objects"][0]["bbox"].__setitem__(1, float("nan"))),
        "float-width": label_json(set_(["info", "width"], 47.5)),
        "inf-height": label_json(set_(["info", "height"], float("inf"))),
        "zero-height": label_json(set_(["info", "height"], 0)),
        "string-width": label_json(set_(["info", "width"], "wide")),
        "no-info": label_json(lambda d: d.pop("info")),
        "two-vertices": label_json(lambda d: d["objects"][0].__setitem__("segmentation", [[1, 1], [2, 2]])),
        "bbox-3": label_json(lambda d: d["objects"][0].__setitem__("bbox", [1, 2, 3])),
        "no-category": label_json(lambda d: d["objects"][0].pop("category")),
        "unknown-frame": label_json(set_(["info", "name"], "nowhere.png")),
        "levels-invalid-utf8": copy_labels(lambda L: (L / "levels.json").write_bytes(b"\xff\xfe")),
        "levels-bad-level": copy_labels(lambda L: (L / "levels.json").write_text('{"cup": "huge"}')),
    }
    for what, setup in labels.items():
        name = "{tmp}/labels/levels.json" if what.startswith("levels") else "{tmp}/labels/"
        add(Case(f"labels/{what}", ev, setup, names=name))
    add(Case("labels/missing-folder", ["eval", "{run}", "--labels", "{tmp}/none", *CPU], names="{tmp}/none"))

    # 3c. camera JSON read by query
    cams = {
        "empty-list": [],
        "nan-pose": [camera(world_to_cam=[[float("nan")] * 4] * 4)],
        "inf-K": [camera(K=[[float("inf"), 0, 24], [0, 40.0, 18], [0, 0, 1]])],
        "zero-focal": [camera(K=[[0, 0, 24], [0, 40.0, 18], [0, 0, 1]])],
        "zero-width": [camera(width=0)],
        "negative-height": [camera(height=-36)],
        "fractional-height": [camera(height=35.5)],
        "string-width": [camera(width="48")],
        "bool-width": [camera(width=True)],
        "huge": [camera(width=10**9)],
        "not-rigid": [camera(world_to_cam=(2 * np.eye(4)).tolist())],
        "K-2x2": [camera(K=[[1, 0], [0, 1]])],
        "no-K": [{k: v for k, v in camera().items() if k != "K"}],
        "same-names": [camera(), camera()],
        "entry-a-list": [[1, 2]],
        "not-json": "{cameras",
        "invalid-utf8": b"\xff\xfe{}",
        "null": "null",
    }
    for what, content in cams.items():
        add(
            Case(
                f"camera/{what}",
                [*q, "--camera", "{tmp}/cameras.json"],
                camera_file(content),
                names="{tmp}/cameras.json",
            )
        )
    add(Case("camera/missing-file", [*q, "--camera", "{tmp}/absent.json"], names="{tmp}/absent.json"))

    # 3d. the file system
    for name, args in (
        ("import-overwrite", [*imp, "--overwrite"]),
        ("prepare-overwrite", [*pr, "--overwrite"]),
        ("distill", di),
        ("query", q),
        ("eval", ev),
    ):
        add(Case(f"read-only/{name}", args, patch=read_only, names="{run}"))
    add(
        Case(
            "read-only/query-out-elsewhere-works",
            [*q, "--out", "{tmp}/q"],
            patch=read_only,
            expect="ok",
            check=query_out_written,
        )
    )
    for name, args in (
        ("distill", di),
        ("eval", ev),
        ("query", q),
        ("prepare-overwrite", [*pr, "--overwrite"]),
        (
            "import-overwrite",
            [
                "import",
                "{tmp}/other.ply",
                "--data",
                "{scene}",
                "--out",
                "{run}",
                "--no-evaluate",
                "--overwrite",
            ],
        ),
    ):
        setup = (lambda c: other_splats(c)) if name == "import-overwrite" else None
        add(Case(f"disk-full/{name}", args, setup, patch=full_disk, names="{run}", identical=False))
    add(
        Case(
            "out-is-a-file/train-rgb",
            ["train-rgb", "{scene}", "--out", "{tmp}/f", *CPU],
            lambda c: (c.tmp / "f").write_text("mine"),
            names="{tmp}/f",
        )
    )
    add(
        Case(
            "out-is-a-file/import",
            ["import", "{gt}", "--data", "{scene}", "--out", "{tmp}/f"],
            lambda c: (c.tmp / "f").write_text("mine"),
            names="{tmp}/f",
        )
    )
    add(
        Case(
            "out-is-a-file/query",
            [*q, "--out", "{tmp}/f"],
            lambda c: (c.tmp / "f").write_text("mine"),
            names="{tmp}/f",
        )
    )
    add(Case("out-is-a-file/eval-folder", ev, lambda c: (c.run / "eval").write_text("x"), names="{run}/eval"))
    add(
        Case(
            "out-is-a-file/run-folder",
            q,
            lambda c: shutil.rmtree(c.run) or c.run.write_text("x"),
            names="{run}",
            identical=False,
        )
    )

    # 2b. absurd options, rejected before anything is written
    new = ["train-rgb", "{scene}", "--out", "{new}"]
    absurd = [
        ("distill --feature-dim 0", [*di, "--feature-dim", "0"], "--feature-dim"),
        ("distill --feature-dim -4", [*di, "--feature-dim", "-4"], "--feature-dim"),
        ("distill --downscale 0", [*di, "--downscale", "0"], "--downscale"),
        ("distill --downscale -2", [*di, "--downscale", "-2"], "--downscale"),
        ("distill --downscale nan", [*di, "--downscale", "nan"], "--downscale"),
        ("distill --downscale inf", [*di, "--downscale", "inf"], "--downscale"),
        ("distill --downscale 10 (5x4 px)", [*di, "--downscale", "10"], "5x4 pixels"),
        ("distill --iterations 0", [*di, "--iterations", "0"], "--iterations"),
        ("distill --checkpoint-every -1", [*di, "--checkpoint-every", "-1"], "--checkpoint-every"),
        ("prepare --prompts.grid 0", [*pr, "--overwrite", "--prompts.grid", "0"], "--prompts.grid"),
        ("prepare --prompts.grid 100", [*pr, "--overwrite", "--prompts.grid", "100"], "36 pixels"),
        ("prepare --prompts.n 0", [*pr, "--overwrite", "--prompts.n", "0"], "--prompts.n"),
        ("prepare --clip-batch-size 0", [*pr, "--overwrite", "--clip-batch-size", "0"], "--clip-batch-size"),
        ("prepare --view-chunk 0", [*pr, "--overwrite", "--view-chunk", "0"], "--view-chunk"),
        ("prepare --depth-tolerance 0", [*pr, "--overwrite", "--depth-tolerance", "0"], "--depth-tolerance"),
        ("prepare --limit -1", [*pr, "--overwrite", "--limit", "-1"], "--limit"),
        (
            "prepare --sam.pred-iou-thresh 2",
            [*pr, "--overwrite", "--sam.pred-iou-thresh", "2"],
            "--sam.pred-iou",
        ),
        (
            "prepare --cleanup.iou-thr -1",
            [*pr, "--overwrite", "--cleanup.iou-thr", "-1"],
            "--cleanup.iou-thr",
        ),
        ("query --box-size 0", [*q[:-4], "--box-size", "0", *CPU], "--box-size"),
        ("query --box-size 100", [*q[:-4], "--box-size", "100", *CPU], "larger than view"),
        ("query --threshold 1.5", [*q, "--threshold", "1.5"], "--threshold"),
        ("query --threshold nan", [*q, "--threshold", "nan"], "--threshold"),
        ("query empty text", ["query", "{run}", " ", *CPU], "empty query text"),
        ("query --view nowhere", [*q, "--view", "nowhere"], "nowhere"),
        ("eval --box-size 0", [*ev[:-4], "--box-size", "0", *CPU], "--box-size"),
        ("eval --box-size 100", [*ev[:-4], "--box-size", "100", *CPU], "larger than label frame"),
        ("eval --threshold 1", [*ev, "--threshold", "1"], "--threshold"),
        ("train-rgb --downscale 0", [*new, "--downscale", "0", *CPU], "downscale"),
        ("train-rgb --downscale 10 (5x4 px)", [*new, "--downscale", "10", *CPU], "5x4 pixels"),
        ("train-rgb --checkpoint-every 0", [*new, "--checkpoint-every", "0", *CPU], "--checkpoint-every"),
        ("train-rgb --iterations -5", [*new, "--iterations", "-5", *CPU], "--iterations"),
        ("train-rgb --sh-degree 4", [*new, "--sh-degree", "4", *CPU], "--sh-degree"),
        ("train-rgb --batch-size 0", [*new, "--batch-size", "0", *CPU], "--batch-size"),
        ("train-rgb --batch-size 100", [*new, "--batch-size", "100", *CPU], "--batch-size"),
        ("train-rgb --lr-means 0", [*new, "--lr-means", "0", *CPU], "--lr-means"),
        ("train-rgb --init-opacity 0", [*new, "--init-opacity", "0", *CPU], "--init-opacity"),
        ("train-rgb --holdout-every -1", [*new, "--holdout-every", "-1", *CPU], "holdout"),
        (
            "train-rgb --overwrite --downscale 0",
            ["train-rgb", "{scene}", "--out", "{run}", "--overwrite", "--downscale", "0", *CPU],
            "downscale",
        ),
        ("train-rgb missing data", ["train-rgb", "{tmp}/nowhere", "--out", "{new}", *CPU], "{tmp}/nowhere"),
    ]
    for name, args, needle in absurd:
        add(Case(f"option/{name}", args, names=needle))

    # 4. offline model loading
    add(
        Case(
            "offline/openclip-missing-weights",
            [*pr0[:-1], "openclip", "--overwrite", *CPU],
            patch=offline_empty_cache,
            names="open_clip weights for model 'ViT-B-16'",
        )
    )
    return out


# ----------------------------------------------------------------------------- main


def build_base(root: Path) -> tuple[Path, Path]:
    from gags.stages.distill import DistillConfig, distill
    from gags.stages.prepare import PrepareConfig, prepare
    from gags.stages.train_rgb import import_ground_truth
    from gags.synthetic.generate import SyntheticConfig, generate_scene

    scene = generate_scene(SyntheticConfig(**TINY_SCENE, cache_dir=root / "cache"))
    run = root / "base"
    import_ground_truth(scene, run)
    prepare(PrepareConfig(run=run, segmenter="oracle", encoder="oracle", device="cpu", seed=0))
    distill(DistillConfig(run=run, iterations=5, device="cpu", progress=False))
    return run, scene


def main() -> None:
    global MOUNT  # noqa: PLW0603
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", default="", help="only cases whose name contains this")
    parser.add_argument("--list", action="store_true", help="print the case names and exit")
    parser.add_argument("--no-mount", action="store_true", help="mock read-only folders and full disks")
    parser.add_argument(
        "--case-seconds", type=int, default=60, help="a case running longer ran on (accepted)"
    )
    args = parser.parse_args()
    global CASE_SECONDS
    CASE_SECONDS = args.case_seconds
    all_cases = [c for c in cases() if args.k in c.name]
    if args.list:
        print("\n".join(c.name for c in all_cases))
        return
    MOUNT = not args.no_mount and _can_mount()
    import logging

    logging.disable(logging.WARNING)
    counts = dict.fromkeys(
        [
            "handled_cleanly",
            "tracebacks",
            "silently_accepted",
            "data_loss",
            "code_executed",
            "unclear",
            "failed",
            "battery_error",
        ],
        0,
    )
    problems: list[dict[str, str]] = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        with contextlib.redirect_stdout(sys.stderr):
            base, scene = build_base(Path(tmp))
        built = time.perf_counter() - start
        for case in all_cases:
            category, detail = run_case(case, base, scene, Path(tmp))
            counts[category] += 1
            if category != "handled_cleanly":
                problems.append({"case": case.name, "outcome": category, "detail": detail})
            print(f"{category:18s} {case.name}", file=sys.stderr)
    result = {
        "cases_tried": len(all_cases),
        **counts,
        "file_system_faults": "real bind mount / tmpfs" if MOUNT else "mocked EROFS / ENOSPC",
        "offline_openclip_seconds": round(OFFLINE_SECONDS[0], 2) if OFFLINE_SECONDS else None,
        "seconds": {"base_run": round(built, 1), "total": round(time.perf_counter() - start, 1)},
        "problems": problems,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
