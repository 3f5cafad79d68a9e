"""Frames from a video file for structure from motion: spread evenly, the blurriest left out.

Decoding goes through imageio's FFMPEG plugin, whose ``imageio-ffmpeg`` wheel ships the ffmpeg
binary (so nothing has to be installed system-wide). The video is cut into ``num_frames`` equal
stretches of time; in each, the sharpest frame wins, sharpness being the variance of the Laplacian
of the grey image (Pech-Pacheco et al. 2000), so motion-blurred frames of a hand-held clip are dropped.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np

from gags.errors import GagsError, file_error

#: file name endings read as videos (lower case)
VIDEO_EXTENSIONS = (".mp4", ".mov", ".m4v", ".avi", ".mkv", ".webm", ".mts", ".m2ts", ".3gp", ".wmv", ".mpg")
#: sharpness is measured on a grey copy whose longer side is at most this many pixels (speed; the
#: ranking of frames of one video does not depend on it)
SHARPNESS_SIZE = 640


@dataclasses.dataclass
class FrameSelection:
    """What :func:`extract_frames` wrote.

    Attributes:
        paths: the frame files, in time order.
        indices: the index in the video of each written frame.
        sharpness: the variance of the Laplacian of each written frame.
        total_frames: frames in the video; fps: its frame rate (0 when unknown).
        candidates: frames whose sharpness was measured (the others were decoded and skipped).
    """

    paths: list[Path]
    indices: list[int]
    sharpness: list[float]
    total_frames: int
    fps: float
    candidates: int


def is_video(path: Path) -> bool:
    """True for a file whose name ends like a video (``.mp4``, ``.mov``, ...)."""
    return path.is_file() and path.suffix.lower() in VIDEO_EXTENSIONS


def sharpness(rgb: np.ndarray) -> float:
    """Variance of the Laplacian of the grey image of ``rgb`` (H, W, 3) uint8; higher is sharper."""
    import cv2

    gray = cv2.cvtColor(np.ascontiguousarray(rgb[..., :3]), cv2.COLOR_RGB2GRAY)
    scale = SHARPNESS_SIZE / max(gray.shape)
    if scale < 1:
        gray = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


def count_frames(video: Path) -> tuple[int, float]:
    """(frames, fps) of ``video``, counted by decoding it with ffmpeg; a :class:`GagsError` if unreadable."""
    import imageio_ffmpeg

    if not video.is_file():
        raise file_error(video, "video file does not exist")
    try:
        frames, seconds = imageio_ffmpeg.count_frames_and_secs(str(video))
    except (RuntimeError, OSError, ValueError) as e:
        raise file_error(video, f"cannot be read as a video ({_ffmpeg_reason(e)})") from e
    if frames <= 0:
        raise file_error(video, "video has no frames")
    return int(frames), (frames / seconds if seconds > 0 else 0.0)


def frame_bins(total: int, num_frames: int) -> np.ndarray:
    """(total,) int: the stretch of time (0 .. num_frames - 1) each frame of the video falls in.

    Every frame is its own stretch when the video has no more than ``num_frames`` frames.
    """
    if num_frames <= 0:
        raise GagsError(f"--num-frames must be positive, got {num_frames}")
    n = min(num_frames, total)
    return (np.arange(total) * n) // total


def candidate_mask(bins: np.ndarray, per_bin: int) -> np.ndarray:
    """(total,) bool: the frames whose sharpness is measured, at most ``per_bin`` spread over each stretch."""
    mask = np.zeros(len(bins), dtype=bool)
    for b in np.unique(bins):
        members = np.flatnonzero(bins == b)
        take = np.unique(np.linspace(0, len(members) - 1, min(per_bin, len(members))).round().astype(int))
        mask[members[take]] = True
    return mask


def extract_frames(
    video: Path,
    out_dir: Path,
    num_frames: int,
    *,
    candidates_per_frame: int = 10,
    jpeg_quality: int = 95,
    progress: Callable[[int, int], None] | None = None,
) -> FrameSelection:
    """Write the sharpest frame of each of ``num_frames`` equal stretches of ``video`` into ``out_dir``.

    Args:
        video: the video file (anything ffmpeg decodes; rotation metadata is applied by ffmpeg).
        out_dir: folder for ``frame_XXXXXX.jpg`` (XXXXXX = the frame's index in the video).
        num_frames: frames wanted; a shorter video gives all its frames.
        candidates_per_frame: frames per stretch whose sharpness is compared (spread over the stretch).
        jpeg_quality: JPEG quality of the written frames.
        progress: called with (frames decoded, total frames) as decoding goes.

    Returns:
        A :class:`FrameSelection`. Raises :class:`GagsError` naming ``video`` when it cannot be decoded.
    """
    import imageio.v3 as iio

    total, fps = count_frames(video)
    bins = frame_bins(total, num_frames)
    measure = candidate_mask(bins, max(1, candidates_per_frame))
    out_dir.mkdir(parents=True, exist_ok=True)
    selection = FrameSelection([], [], [], total, fps, int(measure.sum()))
    best: tuple[float, int, np.ndarray] | None = None  # the current stretch's (sharpness, index, frame)

    def flush() -> None:  # stretches are contiguous in time: only one frame is held in memory
        if best is None:
            return
        score, index, frame = best
        path = out_dir / f"frame_{index:06d}.jpg"
        iio.imwrite(path, frame[..., :3], quality=jpeg_quality)
        selection.paths.append(path)
        selection.indices.append(index)
        selection.sharpness.append(score)

    decoded = 0
    try:
        for index, frame in enumerate(iio.imiter(video, plugin="FFMPEG")):
            decoded = index + 1
            if progress is not None:
                progress(decoded, total)
            if index >= total or not measure[index]:
                continue
            if best is not None and bins[best[1]] != bins[index]:
                flush()
                best = None
            score = sharpness(frame)
            if best is None or score > best[0]:
                best = (score, index, np.array(frame, copy=True))
    except (RuntimeError, OSError, ValueError, StopIteration) as e:
        raise file_error(video, f"cannot be decoded after {decoded} frames ({_ffmpeg_reason(e)})") from e
    flush()
    if not selection.paths:
        raise file_error(video, "no frame could be decoded")
    return selection


def _ffmpeg_reason(e: BaseException) -> str:
    """The last informative line of an ffmpeg/imageio error (their messages hold ffmpeg's whole log)."""
    text = str(e).split("=== stderr ===")[0]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else type(e).__name__
