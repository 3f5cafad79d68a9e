"""Scenes: cameras, loaders for COLMAP, Blender/nerfstudio and LLFF data, splits and images."""
