"""The run folder: one place that knows where every stage reads and writes.

```
runs/NAME/
  config.json            resolved configuration of every stage that ran
  splats.ply             RGB Gaussians (standard 3DGS PLY layout)
  checkpoints/           optimiser state for resume
  segments/IMAGE.npz     int32 (3, H, W) segment-index maps for subpart/part/whole (-1 = none)
  features/IMAGE.npz     float16 (N_segments, D) L2-normalised image-text features
  language.pt            per-Gaussian 16-d features + decoders
  splats_language.ply    splats.ply plus the feature channels
  eval/                  metrics.json, tables, figures, renders
```
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from gags.errors import GagsError, file_error
from gags.io import write_json_atomic


@dataclasses.dataclass(frozen=True)
class RunFolder:
    """Paths inside one run folder. Creating the object touches nothing on disk."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def splats(self) -> Path:
        return self.root / "splats.ply"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def segments(self) -> Path:
        return self.root / "segments"

    @property
    def features(self) -> Path:
        return self.root / "features"

    @property
    def language(self) -> Path:
        return self.root / "language.pt"

    @property
    def splats_language(self) -> Path:
        return self.root / "splats_language.ply"

    @property
    def eval(self) -> Path:
        return self.root / "eval"

    def segment_file(self, image_name: str) -> Path:
        return self.segments / f"{Path(image_name).stem}.npz"

    def feature_file(self, image_name: str) -> Path:
        return self.features / f"{Path(image_name).stem}.npz"

    def require(self, path: Path, produced_by: str) -> Path:
        """Return ``path`` if it exists, else raise an error naming the stage that makes it."""
        if not path.exists():
            raise GagsError(f"{path} does not exist: run `{produced_by}` on {self.root} first")
        return path

    def read_config(self) -> dict[str, Any]:
        """The merged configuration of every stage that ran (empty if none)."""
        if not self.config.exists():
            return {}
        try:
            return json.loads(self.config.read_text())
        except json.JSONDecodeError as e:
            raise file_error(self.config, f"is not valid JSON ({e})") from e

    def record_stage(self, stage: str, config: Any) -> None:
        """Store one stage's resolved configuration under ``config.json[stage]`` (atomic)."""
        data = self.read_config()
        data[stage] = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else config
        write_json_atomic(self.config, data)
