"""Offline model loading is quiet and fast (issue 10, item 4).

With ``HF_HUB_OFFLINE=1`` (CI sets it) and an empty Hugging Face cache, building the default OpenCLIP
encoder fails at once with one message: the model, the tag, the cache folder and how to pre-download,
without importing open_clip or building the network (a stand-in module fails the test if it is used).
"""

from __future__ import annotations

import sys
import types

import pytest
from conftest import folder_digest, gags_cli


@pytest.fixture
def offline_empty_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    untouchable = types.ModuleType("open_clip")

    def used(*args, **kwargs):
        raise AssertionError("open_clip was used although the weights are missing and downloads are off")

    untouchable.create_model_and_transforms = used
    untouchable.get_pretrained_cfg = used
    monkeypatch.setitem(sys.modules, "open_clip", untouchable)
    return cache


def test_missing_openclip_weights_offline_fail_fast_with_one_message(offline_empty_cache):
    from gags.errors import GagsError
    from gags.models.openclip import OpenClipEncoder

    with pytest.raises(GagsError) as info:
        OpenClipEncoder("ViT-B-16", "laion2b_s34b_b88k")
    message = str(info.value)
    for part in (
        "'ViT-B-16'",
        "'laion2b_s34b_b88k'",
        str(offline_empty_cache),
        "HF_HUB_OFFLINE=1",
        "Pre-download",
    ):
        assert part in message
    assert "--clip-pretrained PATH" in message and "\n" not in message


def test_prepare_with_missing_weights_is_one_line_and_writes_nothing(offline_empty_cache, run_copy, capsys):
    before = folder_digest(run_copy)
    args = [
        "prepare",
        run_copy,
        "--segmenter",
        "oracle",
        "--encoder",
        "openclip",
        "--overwrite",
        "--device",
        "cpu",
    ]
    code, err = gags_cli(args, capsys)
    assert code == 2 and err.startswith("gags: error: open_clip weights for model 'ViT-B-16'"), err
    assert str(offline_empty_cache) in err and err.count("\n") == 1
    assert folder_digest(run_copy) == before
