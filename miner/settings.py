"""The miner's configuration: one pydantic-settings class, read from ``.env.miner``.

Variables are the upper-case field names without a prefix (``MINER_PORT``,
``UPSTREAM_URL``…); ``MINER_ENV_FILE`` points at another file. Lists are
comma-separated strings so that they read naturally in a ``.env`` file.
"""

from __future__ import annotations

from functools import cached_property
from typing import Literal

from pydantic import model_validator

from shared.schemas import TASKS, WEB_RETRIEVAL_TASK
from shared.settings import CommonSettings, load_settings


def split_list(value: str) -> list[str]:
    """``"a, b,,c"`` → ``["a", "b", "c"]``."""
    return [item.strip() for item in value.split(",") if item.strip()]


class MinerSettings(CommonSettings):
    miner_host: str = "127.0.0.1"
    miner_port: int = 8091
    miner_external_ip: str = ""  # what the metagraph advertises; empty: miner_host
    miner_serve_on_start: bool = True
    miner_workers: int = 1

    miner_backend: Literal["builtin", "upstream"] = "builtin"
    upstream_url: str = ""  # e.g. http://127.0.0.1:8000/v1
    upstream_api_key: str = ""
    upstream_model: str = ""  # empty: forward the requested model name

    miner_models: str = "builtin-small"
    miner_tasks: str = "InferenceTask,WebQuestionAnsweringTask"
    miner_behaviour: Literal["good", "noisy", "slow", "broken", "copycat", "junk_urls", "off_page"] = "good"
    miner_copy_hotkey: str = ""  # copycat: whose answers it copies
    miner_chunk_delay: float = 0.0
    # Where the web index's documents are served (WebRetrievalTask), e.g. http://127.0.0.1:8093.
    miner_web_base_url: str = ""

    # btsession/1 (docs/sessions.md): offer callers a key agreed once, then an HMAC per request instead of a
    # signature. Only with one worker: sessions live in the process's memory.
    miner_offer_sessions: bool = True

    require_validator_permit: bool = True
    allowed_hotkeys: str = ""
    metagraph_refresh_seconds: float = 10.0

    @model_validator(mode="after")
    def _check(self) -> "MinerSettings":
        unknown = [task for task in self.tasks if task not in TASKS]
        if unknown:
            raise ValueError(f"MINER_TASKS has unknown tasks {unknown}; known: {list(TASKS)}")
        if not self.models:
            raise ValueError("MINER_MODELS must name at least one model")
        if self.miner_backend == "upstream" and not self.upstream_url:
            raise ValueError("MINER_BACKEND=upstream needs UPSTREAM_URL (e.g. http://127.0.0.1:8000/v1)")
        if self.miner_behaviour == "copycat" and not self.miner_copy_hotkey:
            raise ValueError("MINER_BEHAVIOUR=copycat needs MINER_COPY_HOTKEY (the hotkey whose answers it copies)")
        if WEB_RETRIEVAL_TASK in self.tasks and not self.miner_web_base_url:
            raise ValueError("MINER_TASKS includes WebRetrievalTask: set MINER_WEB_BASE_URL (where the pages are)")
        if self.miner_workers < 1:
            raise ValueError("MINER_WORKERS must be at least 1")
        return self

    # Read on every request: split once (settings do not change after loading).
    @cached_property
    def models(self) -> list[str]:
        return split_list(self.miner_models)

    @cached_property
    def tasks(self) -> list[str]:
        return split_list(self.miner_tasks)

    @cached_property
    def extra_allowed_hotkeys(self) -> frozenset[str]:
        return frozenset(split_list(self.allowed_hotkeys))

    @property
    def sessions_offered(self) -> bool:
        return self.miner_offer_sessions and self.miner_workers == 1

    @property
    def external_ip(self) -> str:
        return self.miner_external_ip or self.miner_host


def load_miner_settings() -> MinerSettings:
    return load_settings(MinerSettings, "MINER_ENV_FILE", ".env.miner")
