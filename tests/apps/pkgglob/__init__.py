"""A package for the API's import tests: modules that leave a marker file when imported
(in the folder named by ``QS_PKGGLOB_MARKERS``) or end the process on import."""

from __future__ import annotations

import os
from pathlib import Path


def mark(name: str) -> None:
    """Leave ``name`` in the markers folder: proof that a module's import-time code ran."""
    folder = os.environ.get("QS_PKGGLOB_MARKERS")
    if folder:
        Path(folder, name).touch()
