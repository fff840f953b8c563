"""What every process is configured with: its wallet, the chain, logging.

Each process has one pydantic-settings class that extends ``CommonSettings``
and reads its own ``.env`` file (``.env.api``, ``.env.validator``,
``.env.miner``); the process's ``*_ENV_FILE`` variable points elsewhere.
Variables in the environment win over the file.
"""

from __future__ import annotations

import os
import sys
from typing import Literal, TypeVar

from loguru import logger
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", env_file_encoding="utf-8")

    wallet_name: str = "validator"
    wallet_hotkey: str = "default"
    wallet_path: str = "~/.bittensor/wallets"

    chain: Literal["local", "bittensor"] = "local"
    subnet_file: str = ".localnet/subnet.json"
    network: str = "finney"
    netuid: int = 1

    redis_url: str = ""
    data_dir: str = ".data"
    log_level: str = "INFO"

    # Serving (shared.serving): connections are a bounded resource, per process.
    http_max_connections: int = Field(10_000, ge=1)
    http_max_connections_per_client: int = Field(1_000, ge=0)  # 0: no cap per client address
    http_header_timeout: float = Field(10.0, ge=0)  # 0: none
    http_max_header_bytes: int = Field(64 * 1024, ge=1024)  # request line and headers; more is a 431
    http_body_timeout: float = Field(30.0, ge=0)  # a body silent this long closes the connection; 0: never
    http_write_timeout: float = Field(30.0, ge=0)  # an answer its client stops reading this long: closed; 0: never
    http_keepalive_timeout: float = Field(5.0, gt=0)
    # Signed servers (miner, validator): the most a signed request's body may be; larger is a 413.
    signed_body_max_bytes: int = Field(16 * 1024 * 1024, ge=1024)


S = TypeVar("S", bound=CommonSettings)


def load_settings(cls: type[S], env_file_variable: str, default_env_file: str) -> S:
    """Instantiate ``cls`` from the environment and the process's ``.env`` file."""
    env_file = os.environ.get(env_file_variable, default_env_file)
    return cls(_env_file=env_file if os.path.exists(env_file) else None)


def configure_logging(level: str) -> None:
    """Loguru to stderr at ``LOG_LEVEL``, in every process (uvicorn workers included).

    Nothing this project logs carries a key, a signature or an API key.
    """
    logger.remove()
    logger.add(sys.stderr, level=level.upper())
