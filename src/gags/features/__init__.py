"""Image-text encoders (OpenCLIP by default), per-mask crops and the on-disk feature store."""
