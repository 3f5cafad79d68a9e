"""The learnt granularity alpha of a GaD field, per pixel: for Fig. 6-style maps and statistics.

alpha = softmax(eta) is decoded from the rendered 16-d feature, by the shared decoder's eta head
(``shared-two-heads``, paper Eq. 2) or by the separate granularity network (``reference-two-nets``).
:func:`render_alpha` renders a view and decodes alpha at every pixel; :func:`alpha_argmax` turns it into
the paper's Fig. 6 map: per pixel the index of the level of largest alpha (0 subpart, 1 part, 2 whole),
-1 where nothing is rendered (accumulated opacity below ``min_opacity``).

Only fields that learn alpha (``method="gags"``) have one; the others raise :class:`GagsError`.
"""

from __future__ import annotations

import torch
from torch import nn

from gags.distill.decoders import GranularityDecoder, SharedDecoder
from gags.distill.field import LanguageField, decode_in_chunks
from gags.errors import GagsError
from gags.models.segmenter import LEVELS
from gags.splats.render import Backend

#: colours of the argmax map (subpart, part, whole), RGB in [0, 1]; background is white
LEVEL_COLOURS = ((0.89, 0.10, 0.11), (0.22, 0.49, 0.72), (0.30, 0.69, 0.29))


class _Eta(nn.Module):
    """(..., F) rendered features -> eta (..., 3), through the shared trunk's head or the separate net."""

    def __init__(self, net: nn.Module, shared: bool) -> None:
        super().__init__()
        self.net, self.shared = net, shared

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.eta(x) if self.shared else self.net(x)


def granularity_decoder(field: LanguageField) -> nn.Module:
    """The module that maps a (..., F) rendered feature to eta (..., 3) for ``field``."""
    payload = field.payload
    if field.method != "gags":
        raise GagsError(f"the {field.method!r} field has a fixed alpha; only method 'gags' learns one")
    if payload["decoder_config"]["form"] == "shared-two-heads":
        if not isinstance(field.decoder, SharedDecoder):
            raise GagsError("a shared-two-heads field must carry a SharedDecoder")
        return _Eta(field.decoder, shared=True).eval()
    state = payload.get("granularity_decoder")
    if state is None:
        raise GagsError("this field was written without its granularity decoder")
    net = GranularityDecoder(int(payload["decoder_config"]["in_dim"]))
    net.load_state_dict(state)
    return _Eta(net.to(field.device), shared=False).eval()


@torch.no_grad()
def render_alpha(
    field: LanguageField,
    viewmats: torch.Tensor,
    Ks: torch.Tensor,
    width: int,
    height: int,
    backend: Backend = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """(alpha (C, H, W, 3), accumulated opacity (C, H, W)) of C cameras.

    Args:
        viewmats: (C, 4, 4) world-to-camera. Ks: (C, 3, 3) intrinsics in pixels of a width x height image.
    """
    eta_net = granularity_decoder(field)
    out = field.render_field(0, viewmats, Ks, width, height, backend)
    eta = decode_in_chunks(eta_net, out.features, len(LEVELS))
    alpha = torch.softmax(eta, dim=-1)
    return alpha, out.alpha


def alpha_argmax(
    alpha: torch.Tensor, opacity: torch.Tensor | None = None, min_opacity: float = 0.5
) -> torch.Tensor:
    """(..., 3) alpha -> (...) int64 level index of the largest weight; -1 where ``opacity < min_opacity``."""
    level = alpha.argmax(-1)
    if opacity is not None:
        level = torch.where(opacity >= min_opacity, level, torch.full_like(level, -1))
    return level


@torch.no_grad()
def alpha_argmax_maps(
    field: LanguageField,
    viewmats: torch.Tensor,
    Ks: torch.Tensor,
    width: int,
    height: int,
    backend: Backend = "auto",
    min_opacity: float = 0.5,
) -> torch.Tensor:
    """Fig. 6: (C, H, W) int64 maps, 0 subpart / 1 part / 2 whole per pixel, -1 where nothing is rendered."""
    alpha, opacity = render_alpha(field, viewmats, Ks, width, height, backend)
    return alpha_argmax(alpha, opacity, min_opacity)


def colourise(levels: torch.Tensor) -> torch.Tensor:
    """(H, W) argmax map -> (H, W, 3) float RGB with :data:`LEVEL_COLOURS` (white for -1)."""
    palette = torch.tensor((*LEVEL_COLOURS, (1.0, 1.0, 1.0)))
    return palette[torch.where(levels < 0, len(LEVEL_COLOURS), levels)]
