"""GaD decoders: rendered 16-d feature -> CLIP-space feature and granularity weights alpha.

All decoders are per-pixel MLPs (the reference's 1x1 convolutions): they act on the last axis of
any (..., F) tensor, so the same module decodes a (C, H, W, 16) render, a (P, 16) pixel batch or the
(N, 16) per-Gaussian features.

Two forms (``DecoderForm``):

- ``shared-two-heads`` (paper, Eq. 2): one decoder D whose trunk feeds two heads,
  ``f_clip, eta = D(f_render)``; the granularity head's gradient reaches the trunk and the field.
- ``reference-two-nets`` (authors' code, spec section 3): the feature decoder :class:`FeatureDecoder`
  (``CNN_decoder``) and a separate :class:`GranularityDecoder` (``CNN_scale_decoder``) fed with the
  *detached* rendered feature, so alpha trains only its own network.

Initialisation of the granularity branch (``AlphaInit``):

- ``default``: PyTorch's default Linear initialisation for every layer (paper and reference: neither
  says otherwise). The initial eta is a random, nearly input-independent vector, so alpha starts as
  one global, slightly non-uniform softmax (e.g. (0.31, 0.40, 0.29)).
- ``uniform``: the last layer of the granularity branch starts at zero (weights and bias), so alpha
  is exactly 1/3 at every pixel at the start and no level is favoured before the field has learnt
  anything; the layer still gets gradients from the first step. Not in the paper or the reference.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

DecoderForm = Literal["shared-two-heads", "reference-two-nets"]
AlphaInit = Literal["default", "uniform"]

#: widths of the reference ``CNN_scale_decoder`` after the 16-d input
GRANULARITY_WIDTHS: tuple[int, ...] = (64, 128, 64, 32, 16)


class FeatureTrunk(nn.Module):
    """The skip-connected body of the reference ``CNN_decoder`` (width ``hidden``).

    x1 = ReLU(C0 x); x2 = ReLU(C2 ReLU(C1 x1)); x3 = ReLU(C3 (x1 + x2)); x4 = ReLU(C5 ReLU(C4 x3));
    returns h = x3 + x4, shape (..., hidden).
    """

    def __init__(self, in_dim: int = 16, hidden: int = 256) -> None:
        super().__init__()
        self.c0 = nn.Linear(in_dim, hidden)
        self.c1 = nn.Linear(hidden, hidden)
        self.c2 = nn.Linear(hidden, hidden)
        self.c3 = nn.Linear(hidden, hidden)
        self.c4 = nn.Linear(hidden, hidden)
        self.c5 = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = F.relu(self.c0(x))
        x2 = F.relu(self.c2(F.relu(self.c1(x1))))
        x3 = F.relu(self.c3(x1 + x2))
        x4 = F.relu(self.c5(F.relu(self.c4(x3))))
        return x3 + x4


class FeatureHead(nn.Module):
    """out = C8 ReLU(C7 ReLU(C6 h)), L2-normalised over the last axis: (..., hidden) -> (..., embed_dim)."""

    def __init__(self, hidden: int, embed_dim: int) -> None:
        super().__init__()
        self.c6 = nn.Linear(hidden, hidden)
        self.c7 = nn.Linear(hidden, hidden)
        self.c8 = nn.Linear(hidden, embed_dim)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        out = self.c8(F.relu(self.c7(F.relu(self.c6(h)))))
        return F.normalize(out, dim=-1)


def _mlp(widths: list[int]) -> nn.Sequential:
    """Linear layers with ReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class FeatureDecoder(nn.Module):
    """Reference ``CNN_decoder``: (..., in_dim) rendered feature -> (..., embed_dim) unit vectors."""

    def __init__(self, in_dim: int = 16, embed_dim: int = 512, hidden: int = 256) -> None:
        super().__init__()
        self.trunk = FeatureTrunk(in_dim, hidden)
        self.head = FeatureHead(hidden, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))


class GranularityDecoder(nn.Module):
    """Reference ``CNN_scale_decoder``: (..., in_dim) -> eta (..., 3) logits; alpha = softmax(eta).

    Layers in_dim -> 64 -> 128 -> 64 -> 32 -> 16 -> 3 with ReLU between them.
    """

    def __init__(self, in_dim: int = 16) -> None:
        super().__init__()
        self.net = _mlp([in_dim, *GRANULARITY_WIDTHS, 3])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SharedDecoder(nn.Module):
    """Paper Eq. 2: one decoder D with a shared trunk and two heads, ``f_clip, eta = D(f_render)``.

    The feature head is the reference's (so ``decode`` matches :class:`FeatureDecoder` in cost); the
    granularity head maps the trunk's (..., hidden) activations to eta (..., 3) through
    hidden -> 64 -> 32 -> 16 -> 3.
    """

    def __init__(self, in_dim: int = 16, embed_dim: int = 512, hidden: int = 256) -> None:
        super().__init__()
        self.trunk = FeatureTrunk(in_dim, hidden)
        self.head = FeatureHead(hidden, embed_dim)
        self.eta_head = _mlp([hidden, 64, 32, 16, 3])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Only the CLIP-space feature (..., embed_dim): what queries need."""
        return self.head(self.trunk(x))

    def both(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(f_clip (..., embed_dim) unit vectors, eta (..., 3) logits) from one trunk pass."""
        h = self.trunk(x)
        return self.head(h), self.eta_head(h)

    def eta(self, x: torch.Tensor) -> torch.Tensor:
        """Only the granularity logits eta (..., 3) (``both(x)[1]`` without the feature head's cost)."""
        return self.eta_head(self.trunk(x))


class GaDDecoders(nn.Module):
    """The decoders of one GaD field in either form, behind one call.

    ``feature`` decodes f_clip (the only part queries use); ``granularity`` is the separate
    network of the reference form, None for the shared form and for fixed-alpha methods.
    """

    def __init__(
        self,
        form: DecoderForm,
        embed_dim: int,
        in_dim: int = 16,
        hidden: int = 256,
        learn_alpha: bool = True,
        alpha_init: AlphaInit = "default",
    ) -> None:
        super().__init__()
        self.form = form
        self.learn_alpha = learn_alpha
        if form == "shared-two-heads":
            self.feature: nn.Module = SharedDecoder(in_dim, embed_dim, hidden)
            self.granularity: GranularityDecoder | None = None
        elif form == "reference-two-nets":
            self.feature = FeatureDecoder(in_dim, embed_dim, hidden)
            self.granularity = GranularityDecoder(in_dim) if learn_alpha else None
        else:
            raise ValueError(f"unknown decoder form {form!r}; choose shared-two-heads or reference-two-nets")
        if alpha_init == "uniform" and self.eta_layers():
            last = self.eta_layers()[-1]
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        elif alpha_init != "default":
            raise ValueError(f"unknown alpha initialisation {alpha_init!r}; choose default or uniform")

    def eta_layers(self) -> list[nn.Linear]:
        """The Linear layers of the granularity branch (the eta head or the separate network)."""
        net = self.feature.eta_head if self.form == "shared-two-heads" else self.granularity
        return [] if net is None else [m for m in net.modules() if isinstance(m, nn.Linear)]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(..., in_dim) rendered features -> (f_clip (..., D) unit vectors, eta (..., 3) or None).

        eta is None when alpha is not learned. In the reference form the granularity network sees
        ``x.detach()`` (reference train.py:149).
        """
        if self.form == "shared-two-heads":
            f_clip, eta = self.feature.both(x)
            return f_clip, (eta if self.learn_alpha else None)
        eta = self.granularity(x.detach()) if self.granularity is not None else None
        return self.feature(x), eta


def decoder_config(form: DecoderForm, embed_dim: int, in_dim: int = 16, hidden: int = 256) -> dict:
    """The dict stored as ``language.pt["decoder_config"]`` that :func:`build_decoder` reads."""
    return {"form": form, "embed_dim": int(embed_dim), "in_dim": int(in_dim), "hidden": int(hidden)}


def build_decoder(config: dict) -> nn.Module:
    """The query-time decoder described by a ``decoder_config`` dict (any method's).

    Forms: ``shared-two-heads`` and ``reference-two-nets`` (:func:`decoder_config`, GaD) and
    ``langsplat-autoencoder`` (:func:`gags.distill.autoencoder.autoencoder_config`).
    """
    form = config["form"]
    if form == "langsplat-autoencoder":
        from gags.distill.autoencoder import AutoencoderDecoder

        return AutoencoderDecoder(config["embed_dim"], config["in_dim"])
    if form not in ("shared-two-heads", "reference-two-nets"):
        raise ValueError(f"unknown decoder form {form!r}")
    cls = SharedDecoder if form == "shared-two-heads" else FeatureDecoder
    return cls(config["in_dim"], config["embed_dim"], config["hidden"])
