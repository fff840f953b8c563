"""The API worker's settings, read from ``.env.api`` (or ``API_ENV_FILE``)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator

from shared.settings import CommonSettings, load_settings


class ApiSettings(CommonSettings):
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    # The subnet's own .env.api names are read too (WORKERS, VALIDATOR_API); ours win when both are set.
    api_workers: int = Field(1, validation_alias=AliasChoices("api_workers", "workers"))

    validator_url: str = Field("http://127.0.0.1:8092", validation_alias=AliasChoices("validator_url", "validator_api"))
    # The validator's hotkey; empty means our own (API workers sign with the validator's hotkey).
    validator_hotkey: str = ""
    directory_refresh_seconds: float = 5.0

    # Admin key for /api_management: plain (hashed at load) or its sha256 hex digest.
    admin_key: SecretStr = SecretStr("")
    admin_key_sha256: str = ""
    database_url: str = ""  # empty: SQLite under DATA_DIR; postgresql://… for several hosts
    database_schema: str = ""  # PostgreSQL schema for this deployment's tables (created if missing)

    # Keys, limits, credits, usage (REDIS_URL, in the common settings, holds the rate-limit counters).
    key_cache_seconds: float = Field(1.0, ge=0.0, le=5.0)  # how stale a worker's view of a key may be
    default_rate_limits: str = ""  # for keys without their own, e.g. "60 per minute"; empty: none
    credits_per_request: int = Field(1, ge=0)
    # Token budgets for keys without their own (``api.token_budget``); 0: none.
    default_token_quota: int = Field(0, ge=0)
    default_tpm_limit: int = Field(0, ge=0)
    redis_prefix: str = "gateway:"
    log_retention_days: float = Field(30.0, ge=0.0)  # 0: keep request logs forever
    usage_flush_seconds: float = Field(0.5, gt=0.0)
    usage_batch_size: int = Field(500, ge=1)
    usage_buffer_max: int = Field(100_000, ge=1)

    # Model names (``api.model_names``): "name=target" pairs, and what a model no miner serves gets.
    model_aliases: str = ""
    unknown_model: Literal["any", "reject"] = "any"

    # How calls to miners are signed: btauth (btauth/1) or epistula (miners of subnets that still speak it).
    miner_protocol: Literal["btauth", "epistula"] = "btauth"
    # btsession/1 towards miners (and the validator) that offer it (docs/sessions.md): one signed handshake, then an
    # HMAC per request.
    miner_sessions: bool = True

    fanout: int = Field(3, ge=1, le=32)
    top_pool: int = Field(400, ge=1)
    # Routing by the validator's scores (docs/routing.md); "uniform" is the policy before it.
    routing_policy: Literal["rated", "uniform"] = "rated"
    routing_floor: float = Field(0.7, ge=0.0, le=1.0)  # organic traffic only to miners rated >= floor x best
    routing_sharpness: float = Field(2.0, ge=0.0, le=8.0)  # sampling weight = rating ** sharpness
    routing_exploration: float = Field(0.05, ge=0.0, le=1.0)  # share of requests that also ask one other miner
    race_patience_seconds: float = Field(0.15, ge=0.0, le=5.0)  # a better-rated racer may commit this much later
    stream_commit_chunks: int = Field(2, ge=1, le=64)  # content chunks before a stream's miner is chosen
    breaker_failures: int = Field(3, ge=0)  # failures in a row that open a miner's breaker; 0: no breakers
    breaker_open_seconds: float = Field(5.0, gt=0.0)
    breaker_max_open_seconds: float = Field(60.0, gt=0.0)
    breaker_file: str = ""  # empty: DATA_DIR/miner-breakers.bin, shared by the workers of this host
    max_attempts: int = Field(6, ge=1, le=48)
    miner_connect_timeout: float = 2.0
    first_chunk_timeout: float = 15.0
    miner_read_timeout: float = 30.0
    # The longest a streamed answer may take in all, from the call on (the openai SDK's own default timeout);
    # 0: no limit. Without one, a miner trickling empty events (or a token every 29 s) held a client's stream,
    # and the worker's connection and task for it, as long as it liked.
    miner_stream_timeout: float = Field(600.0, ge=0.0)
    # The most a miner's answer may bring, in bytes (a whole answer, or a stream's events): a miner that sends
    # without end is cut there instead of filling the worker's memory. 8 choices of 32,768 tokens streamed
    # one event each come to about 50 MiB.
    miner_max_answer_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    # The most of the winner's stream, in its bytes, that may wait for a client reading slower than the miner
    # sends; past it what waits is let go and the client's stream ends with an error event. What waits is kept
    # as the parts a client is shown (about the stream's own bytes in memory), and the miner is read at its own
    # pace all the same (its timings are scored). The default, the answer cap, stops no stream for its
    # client's pace; lower it to bound a slow client's share of the worker's memory further (the official SDK,
    # parsing every event, falls megabytes behind a miner that answers at memory speed).
    stream_relay_buffer_bytes: int = Field(64 * 1024 * 1024, ge=1024)

    forward_batch_size: int = Field(256, ge=1, le=1000)  # the validator takes at most 1,000 items per POST
    forward_batch_bytes: int = Field(8 * 1024 * 1024, ge=1024)  # per POST; the validator's own cap is 64 MiB
    forward_interval_seconds: float = 0.5
    forward_buffer_max: int = 10_000
    # Rounds a worker forwards per (miner, key) and per miner in a window: per minute, 150x what the validator
    # counts (ORGANIC_PER_KEY_CAP, ORGANIC_PER_MINER_CAP), in windows a tenth of its ORGANIC_WINDOW_SECONDS so
    # that a flood's rounds go as a steady trickle, not all at the start of a minute; the rest is logged, not
    # forwarded (api.forward_budget).
    forward_budget_per_key: int = Field(300, ge=0)  # 0: no limit
    forward_budget_per_miner: int = Field(3000, ge=0)
    forward_budget_window_seconds: float = Field(6.0, gt=0.0)

    # Mixture of miners: first-round size, its deadline, and how many aggregators race.
    mixture_size: int = Field(3, ge=1, le=8)
    mixture_timeout: float = Field(30.0, gt=0)
    mixture_aggregator_fanout: int = Field(1, ge=1, le=8)
    # Test-time inference: reasoning steps at most, and the whole answer's time budget.
    reasoning_max_steps: int = Field(4, ge=1, le=16)
    reasoning_timeout: float = Field(60.0, gt=0)

    # Web retrieval: results are checked against their pages before a client sees them.
    web_retrieval_verify: bool = True
    web_fetch_timeout: float = Field(5.0, gt=0)
    web_fetch_max_bytes: int = Field(1_000_000, ge=1)
    web_fetch_allow_private: bool = False  # true only where pages live on private addresses (local subnet)

    # Conversations: how many stored messages go to miners with each new turn.
    conversation_context_messages: int = Field(100, ge=1, le=10_000)
    conversation_message_max_chars: int = Field(100_000, ge=1)  # longer messages are refused (422), never stored

    # Request bodies in bytes, refused with 413 beyond (see api.body_limit and docs/hardening-api.md).
    max_body_chat: int = Field(8 * 1024 * 1024, ge=1024)  # chat, completions, a conversation's chat
    max_body_conversation: int = Field(1024 * 1024, ge=1024)  # POST /v1/conversations
    max_body_other: int = Field(64 * 1024, ge=1024)  # every other route

    # Work per request (see api.admission): one unit is one miner answer asked for; each costs
    # CREDITS_PER_REQUEST credits and one rate-limit slot.
    max_request_units: int = Field(64, ge=1)
    completions_max_prompts: int = Field(32, ge=1)

    # Brute force: wrong admin keys and wrong API keys per client address, counted across workers.
    auth_failure_limits: str = "20 per minute"
    # Peers whose X-Forwarded-For is believed (IPs or CIDRs, comma-separated); empty: none.
    trusted_proxies: str = ""

    # Moderation: an OpenAI-compatible /v1/moderations endpoint screens prompts when set.
    moderation_url: str = ""
    moderation_api_key: SecretStr = SecretStr("")
    moderation_model: str = ""
    moderation_fail_open: bool = True
    moderation_timeout: float = Field(5.0, gt=0)

    # CORS: comma-separated allowed origins ("*" for any); empty turns CORS off.
    cors_origins: str = ""

    @property
    def cors_origin_list(self) -> list[str]:
        return [origin.strip() for origin in self.cors_origins.split(",") if origin.strip()]

    # Dashboard, metrics, health probes.
    dashboard_enabled: bool = True
    dashboard_session_hours: float = Field(12.0, gt=0.0, le=24 * 30)
    dashboard_cookie_secure: bool = False  # Secure cookies even when the request did not arrive over https
    metrics_enabled: bool = True
    metrics_key: SecretStr = SecretStr("")  # empty: /metrics is open; else Prometheus sends it as a Bearer token
    metrics_dir: str = ""  # empty: DATA_DIR/metrics/api-<port> (multiprocess files, emptied at start)
    ready_max_directory_age_seconds: float = Field(600.0, ge=0.0)  # older: /health/readiness says 503; 0: any

    @field_validator("validator_url")
    @classmethod
    def with_scheme(cls, url: str) -> str:
        """The subnet's ``VALIDATOR_API`` is ``host:port``; ours is a URL."""
        return url if "://" in url else "http://" + url

    @field_validator("model_aliases")
    @classmethod
    def aliases_parse(cls, text: str) -> str:
        from .model_names import parse_aliases  # noqa: PLC0415 (model_names imports the app's modules)

        parse_aliases(text)
        return text

    def admin_key_digest(self) -> bytes:
        """The admin key's sha256; the plain key is not kept once this is computed."""
        if self.admin_key_sha256:
            return bytes.fromhex(self.admin_key_sha256)
        plain = self.admin_key.get_secret_value()
        return hashlib.sha256(plain.encode()).digest() if plain else b""

    @property
    def sqlite_path(self) -> Path:
        if self.database_url.startswith("sqlite:///"):
            return Path(self.database_url.removeprefix("sqlite:///")).expanduser()
        return Path(self.data_dir).expanduser() / "api.sqlite"


def load() -> ApiSettings:
    return load_settings(ApiSettings, "API_ENV_FILE", ".env.api")
