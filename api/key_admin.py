"""Key administration, shared by the admin API and the CLI so both answer alike.

    admin = KeyAdmin(store, cache)
    plain, record = await admin.create(KeySpec(name="alice", credits=100))   # plain: shown once
    await admin.modify("key_…" or "sk-sn-…", KeySpec(enabled=False))
    describe(record)                                                          # masked JSON view

A key is referred to by its public id (``key_…``) or by the key itself; the
latter is hashed before it is looked up, and neither is ever logged.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Optional

from .key_fields import KeySpec
from .keys import ID_PREFIX, LARGEST_COUNT, KeyCache, KeyRecord, hash_key, mask, new_key, new_key_id
from .ratelimit import Decision
from .store import RequestLog, Store


def iso(timestamp: Optional[float]) -> Optional[str]:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def credits_view(key: KeyRecord) -> dict:
    """Remaining credits, as the Unify gateway answers (``None``: unlimited)."""
    return {"id": key.id, "credits": key.credits}


def describe(key: KeyRecord) -> dict:
    """Everything about a key but the key: the admin API's and the CLI's view."""
    per_minute = next((w.limit for w in key.rate_limits if w.seconds == 60), None)
    return {
        "id": key.id,
        "key_hint": key.key_hint,
        "name": key.name,
        "enabled": key.enabled,
        "created_at": iso(key.created_at),
        "updated_at": iso(key.updated_at),
        "expires_at": iso(key.expires_at),
        "expired": key.expired(),
        "credits": key.credits,
        "credits_used": key.credits_used,
        "rate_limit": per_minute,
        "rate_limits": [dict(w.as_dict(), text=w.describe()) for w in key.rate_limits],
        "allowed_tasks": None if key.allowed_tasks is None else list(key.allowed_tasks),
        "allowed_models": None if key.allowed_models is None else list(key.allowed_models),
        "token_quota": key.token_quota,  # None: DEFAULT_TOKEN_QUOTA (api.token_budget)
        "tpm_limit": key.tpm_limit,  # None: DEFAULT_TPM_LIMIT
        "usage": {"requests": key.requests, "prompt_tokens": key.prompt_tokens,
                  "completion_tokens": key.completion_tokens,
                  "total_tokens": key.prompt_tokens + key.completion_tokens, "credits_charged": key.charged,
                  "last_used_at": iso(key.last_used_at)},
    }


def quota_view(key: KeyRecord, decision: Optional[Decision]) -> dict:
    """Used against max, as the ZenGPT gateway answers, plus tokens and every rate-limit window."""
    finite = key.credits is not None
    used = key.credits_used if finite else key.charged
    return {
        "id": key.id,
        "name": key.name,
        "used": used,
        "max": key.credits + key.credits_used if finite else None,
        "remaining": key.credits,
        "unlimited": not finite,
        "requests": key.requests,
        "prompt_tokens": key.prompt_tokens,
        "completion_tokens": key.completion_tokens,
        "total_tokens": key.prompt_tokens + key.completion_tokens,
        "expires_at": iso(key.expires_at),
        "rate_limits": [
            {"limit": s.window.limit, "seconds": s.window.seconds, "text": s.window.describe(), "used": s.used,
             "remaining": s.remaining, "reset_seconds": round(s.reset, 3)}
            for s in (decision.states if decision else ())
        ],
    }


def log_view(log: RequestLog) -> dict:
    view = log.as_dict()
    view["created_at"] = iso(log.created_at)
    view["timestamp"] = log.created_at
    view["total_tokens"] = log.prompt_tokens + log.completion_tokens
    return view


async def usage_report(store: Store, key: Optional[KeyRecord], since: Optional[float],
                       until: Optional[float]) -> dict:
    """Totals per key (all time) and per UTC day in the period: one key, or all of them."""
    keys = [key] if key is not None else await store.list_keys(limit=10_000)
    daily = await store.daily_usage(key.id if key else None, since, until)
    return {"keys": [{"id": k.id, "name": k.name, **describe(k)["usage"]} for k in keys], "daily": daily}


class KeyAdmin:
    def __init__(self, store: Store, cache: Optional[KeyCache] = None):
        self.store = store
        self.cache = cache

    async def create(self, spec: KeySpec, plain: Optional[str] = None) -> tuple[str, KeyRecord]:
        """A new key; ``plain`` adopts an existing one (``keys import``) instead of making one."""
        plain, now = plain or new_key(), time.time()
        changes, added = spec.changes(None)
        credits = changes.get("credits")
        if added and credits is not None:
            credits = min(max(0, credits + added), LARGEST_COUNT)
        record = KeyRecord(
            id=new_key_id(), key_hash=hash_key(plain), key_hint=mask(plain), name=changes.get("name") or "",
            enabled=changes.get("enabled", True) is not False, created_at=now, updated_at=now,
            expires_at=changes.get("expires_at"), credits=credits,
            rate_limits=tuple(changes.get("rate_limits", ())),
            allowed_tasks=None if changes.get("allowed_tasks") is None else tuple(changes["allowed_tasks"]),
            allowed_models=None if changes.get("allowed_models") is None else tuple(changes["allowed_models"]),
            token_quota=changes.get("token_quota"), tpm_limit=changes.get("tpm_limit"),
        )
        await self.store.insert_key(record)
        return plain, record

    async def find(self, ref: str) -> Optional[KeyRecord]:
        if ref.startswith(ID_PREFIX):
            record = await self.store.key_by_id(ref)
            if record is not None:
                return record
        return await self.store.key_by_hash(hash_key(ref))

    async def modify(self, ref: str, spec: KeySpec) -> Optional[KeyRecord]:
        current = await self.find(ref)
        if current is None:
            return None
        changes, added = spec.changes(current)
        updated = await self.store.update_key(current.id, changes, add_credits=added)
        self._forget(current)
        return updated

    async def delete(self, ref: str) -> bool:
        current = await self.find(ref)
        if current is None:
            return False
        deleted = await self.store.delete_key(current.id)
        self._forget(current)
        return deleted

    async def list(self, limit: int = 100, offset: int = 0) -> list[KeyRecord]:
        return await self.store.list_keys(limit, offset)

    def _forget(self, record: KeyRecord) -> None:
        if self.cache is not None:
            self.cache.forget(record.key_hash)
