"""Rasterisation backends behind :func:`gags.splats.render.render`.

- ``dense``: all pixels x all Gaussians; the reference for tests, small inputs only.
- ``torch``: tile-based portable PyTorch rasteriser (CPU, Apple MPS), differentiable, chunked.
- ``gsplat``: gsplat's CUDA kernels, used automatically on CUDA devices.

All share gsplat's conventions (see :mod:`gags.splats.projection`).
"""
