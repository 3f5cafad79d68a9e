"""OpenCLIP image-text encoder (default ViT-B-16 / laion2b_s34b_b88k, as the reference, spec section 2)."""

from __future__ import annotations

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
        import open_clip

        self.model_name, self.pretrained = model, pretrained
        self.device = torch.device(device)
        try:
            net, _, _ = open_clip.create_model_and_transforms(
                model, pretrained=pretrained, device=self.device
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
