"""Gaussians, PLY I/O, initialisation, densification, rendering and RGB training."""
