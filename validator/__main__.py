"""``python -m validator``: run the validator with settings from ``.env.validator``."""

from __future__ import annotations

from shared.serving import serve
from shared.settings import configure_logging

from .app import create_app
from .settings import load


def main() -> None:
    settings = load()
    configure_logging(settings.log_level)
    serve(
        create_app(settings),
        settings,
        host=settings.validator_host,
        port=settings.validator_port,
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
