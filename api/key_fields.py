"""What an operator may set on a key, read the same way from the admin API and the CLI.

Every field may be given as JSON or as a query-string/CLI word:

| field | examples | cleared by |
|---|---|---|
| ``rate_limit`` | ``60`` (requests per minute: the subnet's parameter) | |
| ``rate_limits`` | ``"60 per minute and 1000 per day"``, ``[{"limit": 60, "seconds": 60}]`` | ``none`` |
| ``credits`` | ``100`` (requests the key may make) | ``unlimited`` |
| ``add_credits`` | ``50`` (top up; negative takes away, never below 0) | |
| ``expires_at`` | ``2027-01-31``, ``2027-01-31T12:00:00Z``, ``1800000000`` (Unix seconds) | ``never`` |
| ``expires_in`` | ``86400`` (seconds from now) | |
| ``allowed_tasks`` | ``InferenceTask,ProgrammingTask`` | ``any`` |
| ``allowed_models`` | ``default,my-model`` (``default``: requests that name no model) | ``any`` |
| ``token_quota`` | ``100000`` (prompt + completion tokens in all) | ``unlimited`` (then ``DEFAULT_TOKEN_QUOTA``) |
| ``tpm_limit`` | ``20000`` (tokens per minute) | ``none`` (then ``DEFAULT_TPM_LIMIT``) |

On modify, fields not given are left alone; ``rate_limit`` replaces the
per-minute window and keeps the others.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.schemas import TASKS

from .keys import LARGEST_COUNT, KeyRecord
from .ratelimit import Window, normalise, parse_windows

CLEAR = {"", "none", "null", "never", "unlimited", "any", "*"}


def is_clear(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip().lower() in CLEAR)


def parse_time(value: Any) -> Optional[float]:
    """ISO 8601 (naive means UTC), a date, or Unix seconds; ``never`` → None.

    Unix seconds must be a time a date can tell (years 1 to 9999): ``Infinity``, ``NaN`` or 1e300 is a
    ``ValueError`` (the caller's 422), not a comparison or a date conversion that fails later."""
    if is_clear(value):
        return None
    if isinstance(value, (int, float)):
        try:
            return seconds_in_range(float(value))
        except OverflowError:  # an integer past any float
            raise ValueError("time out of range") from None
    text = str(value).strip()
    try:
        seconds = float(text)
    except ValueError:
        seconds = None  # not a number: a date, below
    if seconds is not None:
        return seconds_in_range(seconds)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"cannot read time {text!r}; use ISO 8601 (2027-01-31T12:00:00Z) or Unix seconds") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def seconds_in_range(seconds: float) -> float:
    if not EARLIEST <= seconds <= LATEST:  # NaN fails both comparisons
        raise ValueError(f"time {seconds} out of range: Unix seconds from {EARLIEST:.0f} to {LATEST:.0f}")
    return seconds


def parse_names(value: Any) -> Optional[list[str]]:
    if is_clear(value):
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    return [str(item).strip() for item in items if str(item).strip()]



EARLIEST = -62135596800.0  # 0001-01-01T00:00:00Z
LATEST = 253402300799.0  # 9999-12-31T23:59:59Z: later times cannot be told as dates
CENTURY = 100 * 365 * 86400.0

class KeySpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Optional[str] = Field(None, max_length=200)
    enabled: Optional[bool] = None
    rate_limit: Optional[int] = Field(None, ge=1, le=LARGEST_COUNT, description="requests per minute")
    rate_limits: Optional[list[Window]] = None
    credits: Optional[int] = Field(None, ge=0, le=LARGEST_COUNT)
    add_credits: Optional[int] = Field(None, ge=-LARGEST_COUNT, le=LARGEST_COUNT)
    expires_at: Optional[float] = Field(None, ge=0, le=LATEST)
    expires_in: Optional[float] = Field(None, gt=0, le=CENTURY)
    allowed_tasks: Optional[list[str]] = None
    allowed_models: Optional[list[str]] = None
    token_quota: Optional[int] = Field(None, ge=1, le=LARGEST_COUNT,
                                       description="tokens the key may use in all, or 'unlimited'")
    tpm_limit: Optional[int] = Field(None, ge=1, le=LARGEST_COUNT, description="tokens per minute, or 'none'")

    @field_validator("token_quota", "tpm_limit", mode="before")
    @classmethod
    def read_token_budget(cls, value: Any) -> Any:
        return None if is_clear(value) else value

    @field_validator("rate_limits", mode="before")
    @classmethod
    def read_windows(cls, value: Any) -> Any:
        if is_clear(value):
            return []
        if isinstance(value, str):
            return parse_windows(value)
        return [parse_windows(v)[0] if isinstance(v, str) else v for v in value]

    @field_validator("rate_limits")
    @classmethod
    def positive_windows(cls, windows: Optional[list[Window]]) -> Optional[list[Window]]:
        if windows and any(not 1 <= w.limit <= LARGEST_COUNT or not 1 <= w.seconds <= CENTURY for w in windows):
            raise ValueError(f"every rate limit needs 1 <= limit <= {LARGEST_COUNT} and 1 <= seconds <= {CENTURY:.0f}")
        return None if windows is None else normalise(windows)

    @field_validator("credits", mode="before")
    @classmethod
    def read_credits(cls, value: Any) -> Any:
        return None if is_clear(value) else value

    @field_validator("expires_at", mode="before")
    @classmethod
    def read_expiry(cls, value: Any) -> Any:
        return parse_time(value)

    @field_validator("allowed_tasks", mode="before")
    @classmethod
    def read_tasks(cls, value: Any) -> Any:
        names = parse_names(value)
        unknown = [n for n in names or () if n not in TASKS]
        if unknown:
            raise ValueError(f"unknown tasks {unknown}; one of {', '.join(TASKS)}")
        return names

    @field_validator("allowed_models", mode="before")
    @classmethod
    def read_models(cls, value: Any) -> Any:
        return parse_names(value)

    def merged(self, other: "KeySpec") -> "KeySpec":
        """This spec with ``other``'s given fields on top (query parameters over a JSON body)."""
        given = {name: getattr(other, name) for name in other.model_fields_set}
        return self.model_copy(update=given) if given else self

    def changes(self, current: Optional[KeyRecord]) -> tuple[dict[str, Any], int]:
        """The store columns to set, and credits to add, for what was given."""
        given = self.model_fields_set
        changes: dict[str, Any] = {}
        for name in ("name", "enabled", "credits", "expires_at", "allowed_tasks", "allowed_models", "token_quota",
                     "tpm_limit"):
            if name in given:
                changes[name] = getattr(self, name)
        if "expires_in" in given and self.expires_in is not None:
            changes["expires_at"] = time.time() + self.expires_in
        if "rate_limits" in given or "rate_limit" in given:
            windows = list(self.rate_limits or ()) if "rate_limits" in given else list(
                current.rate_limits if current else ())
            if self.rate_limit is not None:
                windows = [w for w in windows if w.seconds != 60] + [Window(self.rate_limit, 60)]
            changes["rate_limits"] = normalise(windows)
        return changes, (self.add_credits or 0) if "add_credits" in given else 0
