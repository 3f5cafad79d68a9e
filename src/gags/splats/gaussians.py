"""The Gaussian container: raw (pre-activation) parameters plus optional N-D feature channels."""

from __future__ import annotations

import dataclasses

import torch


@dataclasses.dataclass
class Gaussians:
    """N anisotropic 3D Gaussians, stored as the optimiser sees them.

    Attributes:
        means: (N, 3) centres, world units.
        quats: (N, 4) rotations as unnormalised quaternions (w, x, y, z).
        log_scales: (N, 3) log of the per-axis standard deviations, world units.
        opacity_logits: (N,) logit of the opacity.
        sh: (N, K, 3) spherical-harmonic colour coefficients, K = (degree + 1)^2; sh[:, 0] is the DC term.
        features: (N, F) extra channels (e.g. the 16-d language feature), or None.
        feature_names: one name per feature channel (written as PLY properties).
    """

    means: torch.Tensor
    quats: torch.Tensor
    log_scales: torch.Tensor
    opacity_logits: torch.Tensor
    sh: torch.Tensor
    features: torch.Tensor | None = None
    feature_names: list[str] = dataclasses.field(default_factory=list)

    def __len__(self) -> int:
        return int(self.means.shape[0])

    @property
    def sh_degree(self) -> int:
        """Largest SH degree the coefficients can hold."""
        return int(round(self.sh.shape[1] ** 0.5)) - 1

    @property
    def scales(self) -> torch.Tensor:
        """(N, 3) per-axis standard deviations."""
        return torch.exp(self.log_scales)

    @property
    def opacities(self) -> torch.Tensor:
        """(N,) opacities in (0, 1)."""
        return torch.sigmoid(self.opacity_logits)

    @property
    def device(self) -> torch.device:
        return self.means.device

    def to(self, device: torch.device | str) -> Gaussians:
        return self.map(lambda t: t.to(device))

    def detach(self) -> Gaussians:
        return self.map(lambda t: t.detach())

    def subset(self, index: torch.Tensor) -> Gaussians:
        """The Gaussians selected by a boolean mask or an index tensor."""
        return self.map(lambda t: t[index])

    def map(self, fn) -> Gaussians:
        """Apply ``fn`` to every tensor field (features too, when present)."""
        return dataclasses.replace(
            self,
            means=fn(self.means),
            quats=fn(self.quats),
            log_scales=fn(self.log_scales),
            opacity_logits=fn(self.opacity_logits),
            sh=fn(self.sh),
            features=None if self.features is None else fn(self.features),
            feature_names=list(self.feature_names),
        )
