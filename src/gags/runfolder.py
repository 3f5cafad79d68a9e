"""The run folder: one place that knows where every stage reads and writes, and whether it may.

```
runs/NAME/
  config.json            resolved configuration of every stage that ran, and "fingerprints"
  splats.ply             RGB Gaussians (standard 3DGS PLY layout)
  checkpoints/           optimiser state for resume
  segments/IMAGE.npz     int32 (3, H, W) segment-index maps for subpart/part/whole (-1 = none)
  features/IMAGE.npz     float16 (N_segments, D) L2-normalised image-text features
  language.pt            per-Gaussian 16-d features + decoders
  splats_language.ply    splats.ply plus the feature channels
  queries/               outputs of `gags query`
  eval/                  metrics.json, tables, figures, renders
  stale-TIME/            outputs moved aside because what they were computed from was replaced
  .gags.lock             held while a stage writes (the holder's PID inside)
```

Trust mechanisms, shared by every stage:

- **Fingerprints.** ``config.json["fingerprints"][stage]`` holds, once the stage *finished*, the
  sha256 (with size and mtime, so an unchanged file is not hashed again) of what it read
  (``inputs``) and wrote (``outputs``). A later stage calls :meth:`RunFolder.check_unchanged` on what
  it reads: a file that changed since is a clear error that says what to re-run. Folders written
  before fingerprints existed (no ``"fingerprints"`` key) are not checked.
- **Stale outputs** are moved aside into ``stale-TIME/`` (:meth:`RunFolder.move_aside`), with the
  old ``config.json`` and a ``STALE.txt`` saying why, and their stages' records are dropped.
- **One writer at a time.** :meth:`RunFolder.lock` (or the :func:`locked` decorator on a stage
  function) holds ``.gags.lock``: an ``flock`` where the file system has one, else the holder's PID;
  a lock whose holder died is taken over. Taking it also deletes the temporary files a killed run
  left (:func:`gags.io.remove_leftover_tmp`). Under ``torchrun`` the ranks of one job are one
  writer: rank 0 takes the lock for all of them and the others wait for its outcome
  (:mod:`gags.distributed`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from gags.errors import GagsError, file_error, suggest
from gags.io import remove_leftover_tmp, write_json_atomic, write_text_atomic

log = logging.getLogger(__name__)

LOCK_NAME = ".gags.lock"
STALE_PREFIX = "stale-"
#: key of config.json holding each finished stage's input and output fingerprints
FINGERPRINTS = "fingerprints"

#: lock files this process holds: resolved run folder -> depth (the lock is re-entrant in a process)
_HELD: dict[Path, int] = {}


@dataclasses.dataclass(frozen=True)
class RunFolder:
    """Paths inside one run folder. Creating the object touches nothing on disk."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def splats(self) -> Path:
        return self.root / "splats.ply"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def segments(self) -> Path:
        return self.root / "segments"

    @property
    def features(self) -> Path:
        return self.root / "features"

    @property
    def language(self) -> Path:
        return self.root / "language.pt"

    @property
    def splats_language(self) -> Path:
        return self.root / "splats_language.ply"

    @property
    def queries(self) -> Path:
        return self.root / "queries"

    @property
    def eval(self) -> Path:
        return self.root / "eval"

    @property
    def lock_file(self) -> Path:
        return self.root / LOCK_NAME

    def computed_from_splats(self) -> list[Path]:
        """What the stages after train-rgb computed from ``splats.ply`` (moved aside when it is
        replaced): segments, features, the language field and its checkpoint, queries, the evaluation
        (all of ``eval/`` but train-rgb's own ``rgb_metrics.json`` and ``rgb/``) and the demo's
        ``baselines/``."""
        evals = (
            [p for p in self.eval.iterdir() if p.name not in ("rgb_metrics.json", "rgb")]
            if self.eval.is_dir()
            else []
        )
        return [
            self.segments,
            self.features,
            self.language,
            self.splats_language,
            self.checkpoints / "distill.pt",
            self.queries,
            *sorted(evals),
            self.root / "baselines",
        ]

    def segment_file(self, image_name: str) -> Path:
        return self.segments / f"{Path(image_name).stem}.npz"

    def feature_file(self, image_name: str) -> Path:
        return self.features / f"{Path(image_name).stem}.npz"

    def require(self, path: Path, produced_by: str) -> Path:
        """Return ``path`` if it exists, else raise an error naming the stage that makes it.

        ``produced_by`` is the command, e.g. ``"gags distill"``; the suggestion adds this folder,
        shell-quoted (``gags train-rgb DATA --out RUN`` for train-rgb).
        """
        if not path.exists():
            words = produced_by.split()
            if words[:2] == ["gags", "train-rgb"]:
                command = suggest("gags", "train-rgb", "DATA", "--out", self.root)
            elif len(words) == 2 and words[0] == "gags":
                command = suggest(*words, self.root)
            else:
                command = f"`{produced_by}`"
            moved = self._moved_to(path)
            extra = f" (the previous one was moved to {moved} when what it was computed from changed)"
            raise GagsError(f"{path} does not exist: run {command} first{extra if moved else ''}")
        return path

    def _moved_to(self, path: Path) -> Path | None:
        """The newest ``stale-*/`` folder holding ``path``'s counterpart, if any."""
        try:
            rel = path.relative_to(self.root)
            stale = sorted(self.root.glob(f"{STALE_PREFIX}*"), reverse=True)
        except (ValueError, OSError):
            return None
        return next((s for s in stale if (s / rel).exists()), None)

    # ----- config.json ----------------------------------------------------------------------
    def read_config(self) -> dict[str, Any]:
        """The merged configuration of every stage that ran (empty if none).

        Raises:
            GagsError: the file is not UTF-8 JSON or does not hold a JSON object.
        """
        if not self.config.exists():
            return {}
        if self.config.is_dir():
            raise file_error(self.config, "is a folder, not the run's configuration file")
        fix = f"restore it, or move it away and re-run the stages on {self.root}"
        try:
            data = json.loads(self.config.read_bytes().decode("utf-8"))
        except UnicodeDecodeError as e:
            raise file_error(self.config, f"is not UTF-8 JSON text (byte {e.start}); {fix}") from e
        except json.JSONDecodeError as e:
            raise file_error(self.config, f"is not valid JSON ({e}); {fix}") from e
        if not isinstance(data, dict):
            raise file_error(self.config, f"must hold a JSON object, not {_json_kind(data)}; {fix}")
        return data

    def stage_entry(self, stage: str) -> dict[str, Any] | None:
        """``config.json[stage]`` (None when the stage never ran); an error if it is not an object."""
        value = self.read_config().get(stage)
        if value is not None and not isinstance(value, dict):
            raise file_error(self.config, f"entry {stage!r} must be a JSON object, not {_json_kind(value)}")
        return value

    def record_stage(
        self,
        stage: str,
        config: Any,
        *,
        inputs: Iterable[Path] | None = None,
        outputs: Iterable[Path] | None = None,
        running: bool = False,
    ) -> None:
        """Store one stage's resolved configuration under ``config.json[stage]`` (atomic).

        With ``inputs``/``outputs`` (call it once the stage succeeded) their fingerprints are stored
        as the stage's finished record. ``running=True`` (a stage that records its settings before it
        starts changing its outputs, then calls :meth:`finish_stage`) marks it as not finished, so
        later stages refuse its outputs until it is; otherwise the stage's fingerprints are dropped.
        """
        data = self.read_config()
        fingerprints = self._fingerprint_table(data)
        if running:
            fingerprints[stage] = {"running": True, "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
        elif inputs is None and outputs is None:
            fingerprints.pop(stage, None)
        else:
            fingerprints[stage] = self._stage_fingerprints(data, inputs or (), outputs or ())
        data[stage] = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else config
        if fingerprints or FINGERPRINTS in data:  # a folder is checked once some stage recorded them
            data[FINGERPRINTS] = fingerprints
        write_json_atomic(self.config, data)

    def finish_stage(self, stage: str, inputs: Iterable[Path] = (), outputs: Iterable[Path] = ()) -> None:
        """Record that ``stage`` finished: the fingerprints of what it read and wrote."""
        data = self.read_config()
        fingerprints = self._fingerprint_table(data)
        fingerprints[stage] = self._stage_fingerprints(data, inputs, outputs)
        data[FINGERPRINTS] = fingerprints
        write_json_atomic(self.config, data)

    def finished(self, stage: str) -> bool | None:
        """Whether ``stage`` has a finished record; None for a folder without fingerprints (older gags)."""
        data = self.read_config()
        if FINGERPRINTS not in data:
            return None
        entry = self._fingerprint_table(data).get(stage)
        return entry is not None and not entry.get("running")

    def check_unchanged(self, recorded_by: str, path: Path, fix: str) -> None:
        """Raise unless ``path`` is what stage ``recorded_by`` recorded having read or written.

        ``fix`` says what to re-run. Nothing is checked in a folder without fingerprints, for a stage
        that an older gags recorded (a config entry without fingerprints), or when the stage did not
        record ``path``.
        """
        data = self.read_config()
        if FINGERPRINTS not in data:
            return
        entry = self._fingerprint_table(data).get(recorded_by)
        command = f"`gags {_command_name(recorded_by)}`"
        if entry is None and recorded_by in data:
            return  # recorded by a gags without fingerprints
        if entry is None:
            raise file_error(
                self.config,
                f"records no finished {command} (never run, or its outputs were moved aside): {fix}",
            )
        if entry.get("running"):
            raise file_error(
                self.config,
                f"records that {command} started but did not finish (interrupted or failed): {fix}",
            )
        rel = self._rel(path)
        known = _get(entry, "inputs", rel) or _get(entry, "outputs", rel)
        if known is None:
            return
        if not path.exists():
            raise file_error(path, f"is missing, but `gags {_command_name(recorded_by)}` used it: {fix}")
        if self.fingerprint(path, data).get("sha256") != known.get("sha256"):
            raise file_error(
                path,
                f"has changed since `gags {_command_name(recorded_by)}` used it, so what was computed "
                f"from it is stale: {fix}",
            )

    def fingerprint(self, path: Path, config: dict[str, Any] | None = None) -> dict[str, Any]:
        """``{"sha256", "size", "mtime_ns"}`` of a file (a folder: of its files' names and contents).

        A file whose size and mtime equal those recorded in ``config.json`` is not hashed again.
        """
        path = Path(path)
        if path.is_dir():
            digest = hashlib.sha256()
            files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
            for p in files:
                digest.update(p.relative_to(path).as_posix().encode() + b"\0")
                digest.update(_sha256_file(p).encode() + b"\n")
            return {"sha256": digest.hexdigest(), "files": len(files)}
        st = path.stat()
        now = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
        data = self.read_config() if config is None else config
        for entry in self._fingerprint_table(data).values():
            for side in ("inputs", "outputs"):
                known = _get(entry, side, self._rel(path))
                if known and known.get("size") == now["size"] and known.get("mtime_ns") == now["mtime_ns"]:
                    return {"sha256": known.get("sha256"), **now}
        return {"sha256": _sha256_file(path), **now}

    def _stage_fingerprints(
        self, data: dict[str, Any], inputs: Iterable[Path], outputs: Iterable[Path]
    ) -> dict[str, Any]:
        return {
            "inputs": {self._rel(p): self.fingerprint(p, data) for p in inputs if Path(p).exists()},
            "outputs": {self._rel(p): self.fingerprint(p, data) for p in outputs if Path(p).exists()},
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }

    def _fingerprint_table(self, data: dict[str, Any]) -> dict[str, Any]:
        table = data.get(FINGERPRINTS, {})
        if not isinstance(table, dict) or not all(isinstance(v, dict) for v in table.values()):
            raise file_error(self.config, f"entry {FINGERPRINTS!r} must map stage names to objects")
        return dict(table)

    def _rel(self, path: Path) -> str:
        try:
            return Path(path).relative_to(self.root).as_posix()
        except ValueError:
            return str(Path(path).resolve())

    # ----- stale outputs --------------------------------------------------------------------
    def move_aside(self, paths: Iterable[Path], stages: Iterable[str], reason: str) -> Path | None:
        """Move the existing ``paths`` into a new ``stale-TIME/`` folder and drop ``stages``' records.

        The folder also gets the old ``config.json`` and ``STALE.txt`` (``reason``). Returns it, or
        None when there was nothing to move.
        """
        existing = [Path(p) for p in paths if Path(p).exists()]
        data = self.read_config()
        stages = [s for s in stages if s in data or s in self._fingerprint_table(data)]
        if not existing and not stages:
            return None
        stamp = time.strftime("%Y%m%d-%H%M%S")
        dest = self.root / f"{STALE_PREFIX}{stamp}"
        n = 1
        while dest.exists():
            n += 1
            dest = self.root / f"{STALE_PREFIX}{stamp}-{n}"
        dest.mkdir(parents=True)
        if self.config.exists():
            shutil.copy2(self.config, dest / "config.json")
        moved = [self._rel(p) for p in existing]
        write_text_atomic(dest / "STALE.txt", f"{reason}\n\nmoved here: {', '.join(moved) or 'nothing'}\n")
        for p in existing:
            target = dest / p.relative_to(self.root)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(p, target)
        fingerprints = self._fingerprint_table(data)
        for stage in stages:
            data.pop(stage, None)
            fingerprints.pop(stage, None)
        if FINGERPRINTS in data or fingerprints:
            data[FINGERPRINTS] = fingerprints
        write_json_atomic(self.config, data)
        return dest

    # ----- one writer at a time -------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, stage: str) -> Iterator[None]:
        """Hold ``.gags.lock`` while ``stage`` writes this folder; re-entrant within a process.

        Under torchrun (several ranks) this is collective: every rank enters it, rank 0 takes the file
        lock (and removes leftover temporary files) before any rank goes on, a refusal is raised on
        every rank, and rank 0 lets go only once every rank has left the block without an error.

        Raises:
            GagsError: another live process holds the lock (the message names it), or the run
                folder path is a file.
        """
        from gags import distributed as dist

        key = self.root.resolve()
        if key in _HELD:
            _HELD[key] += 1
            try:
                yield
            finally:
                _HELD[key] -= 1
            return
        taken: tuple[int, bool] | None = None
        refusal: str | None = None
        if dist.is_main():
            try:
                taken = self._take_lock(stage)
            except BaseException as e:
                if not dist.is_distributed() or not isinstance(e, GagsError):
                    raise  # another rank's failure stops the job (torchrun), or no other rank
                refusal = str(e)
        refusal = dist.broadcast_object(refusal)  # the other ranks wait here for rank 0
        if refusal is not None:
            raise GagsError(refusal)
        _HELD[key] = 1
        try:
            yield
            dist.barrier()  # rank 0 keeps the lock until every rank is done
        finally:
            del _HELD[key]
            if taken is not None:
                fd, created = taken
                _release(self.lock_file, fd)
                if created:
                    with contextlib.suppress(OSError):
                        self.root.rmdir()  # only succeeds when the failed stage wrote nothing

    def _take_lock(self, stage: str) -> tuple[int, bool]:
        """Take ``.gags.lock`` (creating the folder) and clear leftovers -> (descriptor, created)."""
        if self.root.exists() and not self.root.is_dir():
            raise file_error(self.root, "is a file, not a run folder")
        created = not self.root.exists()
        if created:
            self.root.mkdir(parents=True, exist_ok=True)
        try:
            fd = _acquire(self.lock_file, stage)
        except BaseException:
            if created:
                with contextlib.suppress(OSError):
                    self.root.rmdir()
            raise
        try:
            left = remove_leftover_tmp([self.root, self.checkpoints, self.segments, self.features])
            left += remove_leftover_tmp([self.eval, self.queries], recursive=True)
        except BaseException:
            _release(self.lock_file, fd)
            raise
        if left:
            log.info("removed %d temporary file(s) left by an interrupted run", len(left))
        return fd, created


F = TypeVar("F", bound=Callable[..., Any])


def locked(stage: str, root: Callable[[Any], Path | None]) -> Callable[[F], F]:
    """Decorate a stage function ``fn(cfg, ...)``: it runs holding the lock of ``root(cfg)`` (no
    lock when that is None, e.g. a query writing outside the run folder)."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def inner(cfg: Any, *args: Any, **kwargs: Any) -> Any:
            folder = root(cfg)
            if folder is None:
                return fn(cfg, *args, **kwargs)
            with RunFolder(folder).lock(stage):
                return fn(cfg, *args, **kwargs)

        return inner  # type: ignore[return-value]

    return wrap


def _acquire(path: Path, stage: str) -> int:
    """Open, lock and stamp ``path``; returns the descriptor (kept open while held)."""
    for _ in range(20):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            state = _flock(fd)
            holder = _read_holder(fd)
            if state is False or (state is None and _alive(holder)):
                raise GagsError(_busy_message(path, holder))
            try:  # the file may have been removed and recreated by a holder that just released it
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            if holder:
                log.warning(
                    "%s: taking over the lock of PID %s, which is no longer running", path, holder.get("pid")
                )
            stamp = {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "stage": stage,
                "since": time.strftime("%Y-%m-%d %H:%M:%S"),
            }
            os.ftruncate(fd, 0)
            os.write(fd, (json.dumps(stamp) + "\n").encode())
            return fd
        except BaseException:
            with contextlib.suppress(OSError):
                os.close(fd)
            raise
    raise GagsError(f"{path}: could not take the run folder's lock (it keeps changing hands); try again")


def _release(path: Path, fd: int) -> None:
    with contextlib.suppress(OSError):
        if os.stat(path).st_ino == os.fstat(fd).st_ino:
            path.unlink()
    with contextlib.suppress(OSError):
        os.close(fd)


def _flock(fd: int) -> bool | None:
    """True: locked; False: another process holds it; None: the file system has no flock."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:
        return None
    return True


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        data = json.loads(os.read(fd, 4096).decode("utf-8", "replace") or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _alive(holder: dict[str, Any]) -> bool:
    """Whether the lock's PID is a running process on this host (a PID-only lock's stale test)."""
    pid = holder.get("pid")
    if not isinstance(pid, int) or pid <= 0 or pid == os.getpid():
        return False
    if holder.get("host") not in (None, socket.gethostname()):
        return True  # cannot tell for another host: assume it is alive
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def _busy_message(path: Path, holder: dict[str, Any]) -> str:
    who = f"`gags {_command_name(str(holder.get('stage', '?')))}`" if holder.get("stage") else "another gags"
    pid = holder.get("pid", "?")
    since = f" since {holder['since']}" if holder.get("since") else ""
    return (
        f"{path}: the run folder is being written by {who} (PID {pid}{since}); wait for it to finish "
        "or stop it, then run this again"
    )


def _command_name(stage: str) -> str:
    return {"train_rgb": "train-rgb", "evaluate": "eval"}.get(stage, stage)


def fingerprint_json(value: Any) -> str:
    """sha256 of ``value`` as canonical JSON (sorted keys; paths and other objects as strings)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _get(entry: Any, side: str, rel: str) -> dict[str, Any] | None:
    table = entry.get(side) if isinstance(entry, dict) else None
    value = table.get(rel) if isinstance(table, dict) else None
    return value if isinstance(value, dict) else None


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    return {list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number"}.get(
        type(value), type(value).__name__
    )
