"""A progress bar with img/s on long loops; silent when stderr is not a terminal."""

from __future__ import annotations

import sys

from tqdm import tqdm


def progress(total: int, desc: str, enabled: bool | str = "auto", unit: str = "batch") -> tqdm:
    """tqdm bar; ``enabled="auto"`` shows it only on a terminal (logs and CI stay clean)."""
    show = sys.stderr.isatty() if enabled == "auto" else bool(enabled)
    return tqdm(total=total, desc=desc, disable=not show, leave=False, dynamic_ncols=True, unit=unit)
