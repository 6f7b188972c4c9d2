"""One progress bar for every long loop: tqdm on stderr, shown on a terminal, quiet otherwise.

``progress=False`` hides a bar; on a non-terminal (a log file, CI, a pipe) bars stay quiet unless
``PROBEKIT_PROGRESS=1`` is set (``--progress`` on the command line sets it).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any


def shown(enabled: bool = True) -> bool:
    """Whether a bar asked for with ``enabled`` is drawn."""
    if not enabled:
        return False
    return os.environ.get("PROBEKIT_PROGRESS") == "1" or sys.stderr.isatty()


def bar(
    iterable: Iterable[Any] | None = None,
    total: int | None = None,
    desc: str = "",
    unit: str = "it",
    enabled: bool = True,
) -> Any:
    """A ``tqdm`` bar on stderr (``leave=False``), disabled as :func:`shown` says."""
    from tqdm.auto import tqdm

    return tqdm(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        disable=not shown(enabled),
        leave=False,
        file=sys.stderr,
        dynamic_ncols=True,
    )
