"""Atomic file writes: write to a temporary name in the same folder, then rename.

Every stage writes through these helpers so that an interrupted run never leaves a half-written
file under its final name, and an existing good file is only replaced by a complete new one.
New files get the permissions the user's umask gives (``0o666 & ~umask``), not ``mkstemp``'s 0600.
An operating-system error while writing (full disk, read-only folder) is raised as an ``OSError``
that names the final path, not the temporary one; the temporary file is removed.
Temporary names match :data:`TMP_PATTERN`, so :func:`remove_leftover_tmp` can clear what a killed
run left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

#: the temporary names of :func:`atomic_path`: ``.STEM.<8 mkstemp characters>.tmp[SUFFIX]``
TMP_PATTERN = re.compile(r"^\..*\.[a-z0-9_]{8}\.tmp(\.[^.]*)?$")

#: what reading a damaged ``.npz`` can raise (numpy, zipfile and zlib errors)
NPZ_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ValueError,
    EOFError,
    KeyError,
    zipfile.BadZipFile,
    zlib.error,
)


def user_file_mode() -> int:
    """``0o666`` minus the process umask: the mode ``open()`` would give a new file."""
    try:  # Linux: read it without changing it
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it onto ``path``.

    On an exception the temporary file is removed and ``path`` is left untouched.
    The temporary name keeps the suffix of ``path`` so libraries that dispatch on it still work.
    """
    path = Path(path)
    tmp_path: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
        tmp_path = Path(tmp)
        try:
            os.fchmod(fd, user_file_mode())
        except (OSError, AttributeError):  # pragma: no cover - platforms without fchmod
            pass
        os.close(fd)
        yield tmp_path
        os.replace(tmp_path, path)
    except OSError as e:
        named = _naming(e, path, tmp_path)
        if named is e:
            raise
        raise named from e
    finally:
        if tmp_path is not None and tmp_path.exists():
            with contextlib.suppress(OSError):
                tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder next to ``path``; on success it replaces ``path`` as a whole.

    On an exception the temporary folder is removed and ``path`` (with what it held) is left as it
    was, so a failed stage never leaves a mixture of old and new files under the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            aside = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
            os.replace(path, aside / path.name)
            os.replace(tmp, path)
            shutil.rmtree(aside, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _naming(e: OSError, path: Path, tmp: Path | None) -> OSError:
    """``e`` with the final ``path`` as its file name when it named the temporary file or nothing."""
    named = {None, str(tmp) if tmp is not None else None}
    if e.filename is not None and str(e.filename) not in named and e.filename2 is None:
        return e
    if e.errno is None:
        return e
    return type(e)(e.errno, e.strerror, str(path))


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)


def write_json_atomic(path: str | Path, data: Any) -> None:
    """Write ``data`` as indented JSON to ``path`` atomically."""
    write_text_atomic(path, json.dumps(data, indent=2, default=_json_default) + "\n")


def save_npz_atomic(path: str | Path, **arrays: np.ndarray) -> None:
    """Write a compressed ``.npz`` atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)


def save_torch_atomic(path: str | Path, obj: Any) -> None:
    """``torch.save`` to ``path`` atomically.

    ``obj`` should hold only tensors, dicts, lists, tuples, numbers, strings and None, so that
    :func:`torch.load` with ``weights_only=True`` reads it back. The file is written through a Python
    file object so that a full disk raises ``OSError(ENOSPC)`` (torch's own writer raises a bare
    ``RuntimeError``).
    """
    import torch

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)


def remove_leftover_tmp(folders: Iterable[Path], recursive: bool = False) -> list[Path]:
    """Delete the temporary files of :func:`atomic_path` that a killed run left in ``folders``.

    Only call this while holding the run folder's lock (no live writer can own them). Returns the
    files removed.
    """
    removed = []
    for folder in folders:
        if not Path(folder).is_dir():
            continue
        candidates = Path(folder).rglob(".*") if recursive else Path(folder).glob(".*")
        for p in candidates:
            if not TMP_PATTERN.match(p.name):
                continue
            if p.is_dir():  # a folder of :func:`atomic_dir`
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
            elif p.is_file():
                with contextlib.suppress(OSError):
                    p.unlink()
                    removed.append(p)
    return removed


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
