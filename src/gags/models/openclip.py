"""OpenCLIP image-text encoder (default ViT-B-16 / laion2b_s34b_b88k, as the reference, spec section 2)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
import torch.nn.functional as F

from gags.errors import GagsError
from gags.models.encoder import TextImageEncoder

DEFAULT_MODEL = "ViT-B-16"
DEFAULT_PRETRAINED = "laion2b_s34b_b88k"


class OpenClipEncoder(TextImageEncoder):
    """Any ``open_clip`` model; ``pretrained`` is a tag, a local weights file, or None (random weights).

    Runs in fp16 on CUDA (as the reference) and fp32 elsewhere. Weights download on first use into
    open_clip's cache; without network and without a cached copy the error says what to fetch.
    """

    def __init__(
        self, model: str = DEFAULT_MODEL, pretrained: str | None = DEFAULT_PRETRAINED, device: str = "cpu"
    ) -> None:
        self.model_name, self.pretrained = model, pretrained
        self.device = torch.device(device)
        cache_dir = hf_cache_dir()
        check_weights_available(model, pretrained, cache_dir)  # before importing open_clip (seconds)
        import open_clip

        try:
            net, _, _ = open_clip.create_model_and_transforms(
                model, pretrained=pretrained, device=self.device, cache_dir=str(cache_dir)
            )
        except RuntimeError as e:  # unknown model name or tag
            raise GagsError(
                f"cannot build open_clip model {model!r} with pretrained={pretrained!r}: {e}"
            ) from e
        except Exception as e:  # weights could not be downloaded or read
            raise GagsError(
                f"cannot load open_clip weights {model}/{pretrained} ({type(e).__name__}: {e}); with no "
                "network, pass --clip-pretrained PATH to a local weights file"
            ) from e
        self.dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        self.model = net.to(self.dtype).eval()
        self.tokenizer = open_clip.get_tokenizer(model)
        size = net.visual.image_size
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        mean = getattr(net.visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN
        std = getattr(net.visual, "image_std", None) or open_clip.OPENAI_DATASET_STD
        self._mean = torch.tensor(mean, device=self.device).reshape(1, 3, 1, 1)
        self._std = torch.tensor(std, device=self.device).reshape(1, 3, 1, 1)
        self._embed_dim = int(self.encode_texts(["a"]).shape[1])

    @property
    def embed_dim(self) -> int:
        return self._embed_dim

    @property
    def spec(self) -> dict:
        """What :func:`gags.models.registry.build_encoder` needs to rebuild this encoder."""
        return {"kind": "openclip", "model": self.model_name, "pretrained": self.pretrained}

    @torch.no_grad()
    def encode_images(self, crops: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) RGB in [0, 1] (resized to the model's size if needed) -> (B, D) unit float32."""
        x = crops.to(self.device, torch.float32)
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = F.interpolate(
                x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False
            )
        x = ((x - self._mean) / self._std).to(self.dtype)
        return F.normalize(self.model.encode_image(x).float(), dim=-1)

    @torch.no_grad()
    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        """T texts -> (T, D) L2-normalised float32."""
        tokens = self.tokenizer(list(texts)).to(self.device)
        return F.normalize(self.model.encode_text(tokens).float(), dim=-1)


#: open_clip's hub repository of the default weights (so the check needs no open_clip import)
_KNOWN_HUB = {(DEFAULT_MODEL, DEFAULT_PRETRAINED): "laion/CLIP-ViT-B-16-laion2B-s34B-b88K/"}

#: the files open_clip looks for in a Hugging Face repository, safetensors first
_HF_WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment now (``HF_HUB_CACHE``, ``HF_HOME``, ...)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "huggingface" / "hub"


def check_weights_available(model: str, pretrained: str | None, cache_dir: Path) -> None:
    """Fail fast, with one message, when ``model``/``pretrained`` must come from the Hugging Face hub
    but is not in ``cache_dir`` and cannot be downloaded (``HF_HUB_OFFLINE=1`` or no route to the hub).

    A local weights file, random weights (None), a tag open_clip does not know (it reports that
    itself) or a URL-only tag are left to open_clip.
    """
    if not pretrained or Path(pretrained).is_file():
        return
    hub = _KNOWN_HUB.get((model, pretrained))
    if hub is None:
        import open_clip

        hub = (open_clip.get_pretrained_cfg(model, pretrained) or {}).get("hf_hub", "")
    if not hub:
        return
    repo, filename = (hub.rstrip("/"), "") if hub.endswith("/") else os.path.split(hub)
    names = (filename,) if filename else _HF_WEIGHT_FILES
    from huggingface_hub import try_to_load_from_cache

    for name in names:
        found = try_to_load_from_cache(repo, name, cache_dir=str(cache_dir))
        if isinstance(found, str) and Path(found).is_file():
            return
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() not in ("", "0", "false", "no", "off")
    if not offline and _hub_reachable():
        return  # open_clip downloads them (with a progress bar)
    why = "downloads are switched off (HF_HUB_OFFLINE=1)" if offline else "huggingface.co cannot be reached"
    fetch = f"import open_clip; open_clip.create_model_and_transforms({model!r}, pretrained={pretrained!r})"
    raise GagsError(
        f"open_clip weights for model {model!r}, tag {pretrained!r} (Hugging Face repository {repo}) are "
        f"not in the cache {cache_dir} and {why}. Pre-download them where there is network with "
        f'`python -c "{fetch}"` (or `huggingface-cli download {repo}`) and copy the cache folder here '
        "(or point HF_HUB_CACHE at it), or pass --clip-pretrained PATH to a local weights file"
    )


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether huggingface.co answers a TCP connection within ``timeout`` seconds (assumed so behind a
    proxy, which this cannot test)."""
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    host = endpoint.split("://", 1)[-1].split("/", 1)[0]
    name, _, port = host.partition(":")
    try:
        with socket.create_connection((name, int(port or 443)), timeout=timeout):
            return True
    except OSError:
        return False
