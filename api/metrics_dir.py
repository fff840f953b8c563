"""Where the API's worker processes keep their Prometheus counters: set up before any worker starts.

``prometheus_client`` decides at import whether it runs in multiprocess mode
(``PROMETHEUS_MULTIPROC_DIR`` set): each worker then writes its counters to
small memory-mapped files in that folder, and ``/metrics`` on any worker sums
every worker's files, so a scrape is right whichever worker answers. This
module imports nothing from ``prometheus_client`` on purpose: ``python -m
api`` calls ``prepare`` first, then uvicorn starts the workers, which inherit
the variable.

The folder must start empty (files of a previous run would be added in), so
it is per port by default (``DATA_DIR/metrics/api-<port>``): two ``python -m
api`` processes on two ports never wipe each other's, and each port's
``/metrics`` reports its own workers (Prometheus sums the targets).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


def metrics_dir(data_dir: str, api_port: int, configured: str = "") -> Path:
    return Path(configured or os.environ.get(VARIABLE) or Path(data_dir) / "metrics" / f"api-{api_port}").expanduser()


def prepare(data_dir: str, api_port: int, configured: str = "") -> Optional[Path]:
    """An empty folder for this port's workers, named in the environment they will inherit."""
    path = metrics_dir(data_dir, api_port, configured)
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink(missing_ok=True)
    os.environ[VARIABLE] = str(path)
    return path
