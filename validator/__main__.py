"""``python -m validator``: run the validator with settings from ``.env.validator``."""

from __future__ import annotations

import sys

import uvicorn
from loguru import logger

from .app import create_app
from .settings import load


def main() -> None:
    settings = load()
    logger.remove()
    logger.add(sys.stderr, level=settings.log_level.upper())
    uvicorn.run(
        create_app(settings),
        host=settings.validator_host,
        port=settings.validator_port,
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
