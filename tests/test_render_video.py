"""``gags render``: RGB and relevance side by side along a camera path, as a playable MP4."""

from __future__ import annotations

import json
import math

import imageio.v3 as iio
import numpy as np
import pytest

from gags.errors import GagsError
from gags.scene.cameras import Camera
from gags.scene.paths import camera_path_json, look_at, orbit_path, read_camera_path, vertical_fov
from gags.stages.render import RenderConfig, render_video


def ring(n: int = 6, radius: float = 2.0, height: float = 0.5) -> list[Camera]:
    K = np.array([[60.0, 0, 32], [0, 60.0, 24], [0, 0, 1]])
    cams = []
    for k in range(n):
        a = 2 * math.pi * k / n
        eye = np.array([radius * math.cos(a), radius * math.sin(a), height])
        cams.append(Camera(f"c{k}.png", K, look_at(eye, np.zeros(3), np.array([0, 0, 1.0])), 64, 48))
    return cams


def test_orbit_circles_the_scene_centre_at_the_cameras_distance():
    path = orbit_path(ring(), 10)
    assert len(path) == 10 and len({c.name for c in path}) == 10
    for c in path:
        assert np.linalg.norm(c.center[:2]) == pytest.approx(2.0, abs=1e-6)
        assert c.center[2] == pytest.approx(0.5, abs=1e-6)
        # the optical axis goes through the centre (the origin)
        forward = c.world_to_cam[2, :3]
        assert np.allclose(np.cross(forward, -c.center / np.linalg.norm(c.center)), 0, atol=1e-6)
        assert c.world_to_cam[1, 2] < 0  # image "down" points to -z: up stays up
    assert np.allclose(path[0].center, ring()[0].center, atol=1e-6)


def test_camera_path_json_round_trips_through_nerfstudio_axes(tmp_path):
    cams = ring(4)
    data = camera_path_json(cams, fps=12)
    assert data["render_width"] == 64 and len(data["camera_path"]) == 4
    assert data["camera_path"][0]["fov"] == pytest.approx(math.degrees(vertical_fov(cams[0])))
    (tmp_path / "camera_path.json").write_text(json.dumps(data))
    back = read_camera_path(tmp_path / "camera_path.json")
    for a, b in zip(cams, back, strict=True):
        assert np.allclose(a.world_to_cam, b.world_to_cam, atol=1e-9)
        assert np.allclose(a.K, b.K, atol=1e-9) and (a.width, a.height) == (b.width, b.height)
    (tmp_path / "bad.json").write_text(json.dumps({"camera_path": [{"fov": 50}]}))
    with pytest.raises(GagsError, match=r"camera_path\[0\] needs camera_to_world"):
        read_camera_path(tmp_path / "bad.json")


def test_orbit_video_has_the_frames_and_shows_rgb_beside_relevance(reduced_run, tmp_path, capsys):
    out = tmp_path / "orbit.mp4"
    result = render_video(
        RenderConfig(run=reduced_run, path="orbit", query="mug", frames=10, out=out, device="cpu")
    )
    frames = iio.imread(out)  # read back through imageio's ffmpeg
    assert frames.shape[0] == 10 == result["frames"]
    H, W = frames.shape[1:3]
    assert (W, H) == (result["width"], result["height"]) and W == 2 * H * 64 // 48
    left, right = frames[:, :, : W // 2].astype(float), frames[:, :, W // 2 :].astype(float)
    assert left.mean() > 5  # the splats are there
    assert np.abs(right - left).mean() > 3  # the right half carries the relevance overlay

    # a camera_path.json (the first 3 orbit cameras) renders the same way, at its own size
    path = tmp_path / "camera_path.json"
    from gags.runfolder import RunFolder
    from gags.scene.load import load_run_scene

    cams = orbit_path(load_run_scene(RunFolder(reduced_run)).train_cameras, 3)
    path.write_text(json.dumps(camera_path_json(cams)))
    result = render_video(RenderConfig(run=reduced_run, path=str(path), frames=3, device="cpu"))
    assert result["out"].endswith("renders/camera_path.mp4") and result["frames"] == 3

    with pytest.raises(GagsError, match="not orbit, train or an existing"):
        render_video(RenderConfig(run=reduced_run, path="nowhere.json", device="cpu"))
