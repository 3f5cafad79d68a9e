"""One module per command: its configuration dataclass and its orchestration of the libraries.

Importing any stage registers the synthetic scene's ``oracle`` models with the model registry, so a
run folder prepared with them can be queried and evaluated like any other.
"""

import gags.synthetic.oracles  # noqa: F401 - registers the "oracle" segmenter and encoder
