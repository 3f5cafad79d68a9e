"""The learned granularity of a GaD field: alpha = softmax(eta) per pixel, and its argmax (paper Fig. 6).

eta comes from the granularity decoder that ``gags distill`` stored:

- reference form (``reference-two-nets``): ``language.pt["granularity_decoder"]`` holds the state of a
  separate :class:`~gags.distill.decoders.GranularityDecoder` fed with the rendered 16-d feature;
- paper form (``shared-two-heads``): the field's decoder is a :class:`~gags.distill.decoders.SharedDecoder`
  whose ``both()`` returns ``(f_clip, eta)`` from one trunk pass.

Fields without a learned alpha (averaged features, fixed alpha, LangSplat's three fields) have none:
:func:`granularity_decoder` returns None.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from gags.distill.decoders import GranularityDecoder, SharedDecoder
from gags.errors import file_error
from gags.scene.cameras import Camera, stack_cameras

#: eta (..., 3) from rendered features (..., F)
EtaFn = Callable[[torch.Tensor], torch.Tensor]


def granularity_decoder(field) -> EtaFn | None:
    """The function rendered features (..., F) -> eta (..., 3) of a :class:`LanguageField`, or None."""
    if len(field.fields) != 1:
        return None
    if isinstance(field.decoder, SharedDecoder):
        decoder = field.decoder
        return lambda x: decoder.both(x)[1]
    state = field.payload.get("granularity_decoder")
    if not state:
        return None
    net = GranularityDecoder(int(field.payload["decoder_config"].get("in_dim", field.fields[0].shape[1])))
    try:
        net.load_state_dict(state)
    except (RuntimeError, KeyError) as e:
        raise file_error("language.pt", f"has a granularity_decoder that does not load ({e})") from e
    net = net.to(field.device).eval()
    return net


@torch.no_grad()
def alpha_from_features(eta_fn: EtaFn, low_dim: torch.Tensor, chunk: int = 65536) -> torch.Tensor:
    """(..., F) rendered features -> (..., 3) alpha = softmax(eta) (subpart, part, whole)."""
    flat = low_dim.reshape(-1, low_dim.shape[-1])
    parts = [torch.softmax(eta_fn(c), dim=-1) for c in flat.split(chunk)] if flat.shape[0] else []
    out = torch.cat(parts) if parts else flat.new_zeros(0, 3)
    return out.reshape(*low_dim.shape[:-1], 3)


@torch.no_grad()
def alpha_map(field, camera: Camera, low_dim: torch.Tensor | None = None) -> torch.Tensor | None:
    """(H, W, 3) alpha of one camera (None when the field has no learned granularity).

    ``low_dim``: the already rendered (H, W, F) field of that camera, to skip the render.
    """
    eta_fn = granularity_decoder(field)
    if eta_fn is None:
        return None
    if low_dim is None:
        viewmats, Ks = stack_cameras([camera], device=field.device)
        low_dim = field.render_low_dim(viewmats, Ks, camera.width, camera.height)[0][0]
    return alpha_from_features(eta_fn, low_dim.to(field.device)).cpu()


def alpha_argmax(field, camera: Camera, low_dim: torch.Tensor | None = None) -> torch.Tensor | None:
    """(H, W) int64 level of the largest alpha (0 subpart, 1 part, 2 whole), or None (no learned alpha)."""
    alpha = alpha_map(field, camera, low_dim)
    return None if alpha is None else alpha.argmax(dim=-1)
