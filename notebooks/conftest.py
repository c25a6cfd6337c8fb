"""The test suite runs every notebook in its small configuration.

Notebooks read `DYNJAX_NOTEBOOK_SCALE`: `"small"` (set here, before nbmake
starts the kernels, which inherit the environment) runs a quick version of each
training run; unset, a person running the notebook gets the full size
documented in its first cell.
"""

import os


os.environ.setdefault("DYNJAX_NOTEBOOK_SCALE", "small")
os.environ.setdefault("MPLBACKEND", "Agg")
