"""gags: granularity-aware language Gaussian splatting (GAGS) as a package and a command line."""

from gags.errors import GagsError

__version__ = "0.1.0"
__all__ = ["GagsError", "__version__"]
