"""``python -m miner [--env-file PATH]``: run one reference miner with uvicorn.

Configured by ``.env.miner`` (or ``MINER_ENV_FILE``, or ``--env-file``) and the
environment; see ``.env.miner.example``. With ``MINER_WORKERS`` > 1 each
worker process builds its own app from the environment, and they share one
nonce store (SQLite under ``DATA_DIR``, or Redis).
"""

from __future__ import annotations

import argparse
import os

from shared.serving import serve
from shared.settings import configure_logging

from .app import create_app
from .settings import load_miner_settings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m miner", description="Run a reference miner.")
    parser.add_argument("--env-file", help="settings file to read instead of .env.miner (sets MINER_ENV_FILE)")
    args = parser.parse_args(argv)
    if args.env_file:
        os.environ["MINER_ENV_FILE"] = args.env_file  # workers inherit it

    settings = load_miner_settings()
    configure_logging(settings.log_level)
    log_level = settings.log_level.lower()
    common = dict(host=settings.miner_host, port=settings.miner_port, log_level=log_level, coalesce=True,
                  access_log=log_level in ("trace", "debug", "info"),  # else every request formats a line for nothing
                  # Validators connect to a miner directly; nothing reads X-Forwarded-* (the connection caps
                  # count the socket's peer), so uvicorn's proxy-headers middleware would only cost a call.
                  proxy_headers=False)
    if settings.miner_workers > 1:
        serve("miner.app:create_app_from_env", settings, factory=True, workers=settings.miner_workers, **common)
    else:
        serve(create_app(settings), settings, **common)


if __name__ == "__main__":
    main()
