"""GaS: granularity-aware SAM segmentation (paper Section 3.1)."""
