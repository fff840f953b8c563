"""The validator's settings, read from ``.env.validator`` (or ``VALIDATOR_ENV_FILE``)."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Literal, Optional

from pydantic import Field, SecretStr

from shared.settings import CommonSettings, load_settings

from .logprob_check import ReferenceModel
from .rewards import Rules


class ValidatorSettings(CommonSettings):
    validator_host: str = "127.0.0.1"
    validator_port: int = 8092
    # Hotkeys allowed on the internal channel besides our own (comma-separated).
    allowed_api_hotkeys: str = ""
    # Offer btsession/1 to the API workers (docs/sessions.md): a signed handshake, then an HMAC per request.
    validator_offer_sessions: bool = True
    # How calls to miners are signed: btauth (btauth/1) or epistula (miners of subnets that still speak it).
    miner_protocol: Literal["btauth", "epistula"] = "btauth"
    # btsession/1 towards miners that offer it (docs/sessions.md): one signed handshake, then an HMAC per request.
    miner_sessions: bool = True
    metagraph_sync_seconds: float = 12.0
    availability_poll_seconds: float = 30.0
    availability_timeout: float = 3.0
    scoring_queue_max: int = 100_000
    # A scoring batch (64 items by default) can carry long prompts and answers: more room than a miner's request.
    signed_body_max_bytes: int = Field(64 * 1024 * 1024, ge=1024)

    # Synthetic tasks and scoring.
    synthetic_interval_seconds: float = 5.0
    synthetic_sample_size: int = 8
    synthetic_timeout: float = 10.0
    task_mix: str = "InferenceTask:0.4,WebQuestionAnsweringTask:0.4,WebRetrievalTask:0.2"
    score_alpha: float = 0.1
    copycat_penalty: float = Field(2.0, ge=0.0)  # what a caught answer earns, and where the scores restart
    # After each catch the miner's score is held at or below 0 this long (validator.scores); 0: no probation.
    probation_seconds: float = Field(21600.0, ge=0.0)
    speed_scale_seconds: float = Field(7.5, gt=0.0)
    junk_below: float = Field(0.2, ge=0.0, le=1.0)
    copy_similarity: float = Field(0.6, gt=0.0, le=1.0)
    # Organic evidence: bounded, capped per key and per miner (validator.organic).
    organic_bound: float = Field(0.1, ge=0.0, lt=1.0)
    # A miner must advertise this share of TASK_MIX (by weight) for a positive score (validator.scores).
    min_task_coverage: float = Field(1.0, ge=0.0, le=1.0)
    organic_alpha: float = Field(0.05, gt=0.0, le=1.0)
    organic_per_key_cap: int = Field(20, ge=0)
    organic_per_miner_cap: int = Field(200, ge=0)
    organic_window_seconds: float = Field(60.0, gt=0.0)
    # Web retrieval scoring fetches the pages miners name.
    web_fetch_timeout: float = 5.0
    web_fetch_max_bytes: int = 1_000_000
    web_fetch_allow_private: bool = False  # true only where pages live on private addresses (the local subnet)
    web_allowed_hosts: str = ""  # comma-separated host or host:port; empty: any host
    web_max_results_per_host: int = Field(0, ge=0)  # 0: no cap

    # A reference copy of real models, to check upstream miners' answers (empty URL: builtin models only).
    reference_url: str = ""
    reference_api_key: SecretStr = SecretStr("")
    reference_models: str = ""
    reference_top_k: int = Field(20, ge=1, le=20)
    reference_sample_share: float = Field(0.5, gt=0.0, le=1.0)
    reference_secret: SecretStr = SecretStr("")  # picks the checked positions; empty: random per start

    # Weights.
    weights_interval_seconds: float = 1200.0

    # Probes and metrics (unsigned routes of the internal server).
    metrics_enabled: bool = True
    ready_max_metagraph_age_seconds: float = 300.0  # older: /health/readiness says 503; 0: any age

    def allowed_hotkeys(self, own_hotkey: str) -> frozenset[str]:
        extra = {h.strip() for h in self.allowed_api_hotkeys.split(",") if h.strip()}
        return frozenset(extra | {own_hotkey})

    def reference_model(self) -> Optional[ReferenceModel]:
        models = [m.strip() for m in self.reference_models.split(",") if m.strip()]
        if not self.reference_url or not models:
            return None
        secret = self.reference_secret.get_secret_value().encode() or secrets.token_bytes(32)
        return ReferenceModel(self.reference_url, models=models, api_key=self.reference_api_key.get_secret_value(),
                              top_k=self.reference_top_k, share=self.reference_sample_share, secret=secret)

    def rules(self) -> Rules:
        return Rules(penalty=self.copycat_penalty, timeout=self.synthetic_timeout, speed_scale=self.speed_scale_seconds,
                     junk_below=self.junk_below, copy_similarity=self.copy_similarity)

    def task_weights(self) -> dict[str, float]:
        """The task mix, as the fixed weights of a miner's score."""
        return parse_mix(self.task_mix)

    @property
    def allowed_web_hosts(self) -> list[str]:
        return [h.strip() for h in self.web_allowed_hosts.split(",") if h.strip()]

    @property
    def database_path(self) -> Path:
        return Path(self.data_dir).expanduser() / "validator.sqlite"


def parse_mix(text: str) -> dict[str, float]:
    """``"InferenceTask:0.5,WebQuestionAnsweringTask:0.5"`` → {task: share}."""
    mix = {}
    for part in text.split(","):
        if part.strip():
            task, _, share = part.partition(":")
            mix[task.strip()] = float(share or 1)
    return mix


def load() -> ValidatorSettings:
    return load_settings(ValidatorSettings, "VALIDATOR_ENV_FILE", ".env.validator")
