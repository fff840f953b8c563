"""What the store holds, as plain dataclasses, and how rows become them."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from ..keys import KeyRecord
from ..ratelimit import Window

KEY_COLUMNS = ("id, key_hash, key_hint, name, enabled, created_at, updated_at, expires_at, credits, credits_used,"
               " rate_limits, allowed_tasks, allowed_models, requests, prompt_tokens, completion_tokens, charged,"
               " last_used_at, token_quota, tpm_limit")


def dump_list(values: Optional[tuple]) -> Optional[str]:
    return None if values is None else json.dumps(list(values))


def dump_windows(windows: tuple[Window, ...]) -> str:
    return json.dumps([w.as_dict() for w in windows])


def key_from_row(row: Any) -> KeyRecord:
    def as_tuple(text: Optional[str]) -> Optional[tuple[str, ...]]:
        return None if text is None else tuple(json.loads(text))

    return KeyRecord(
        id=row["id"], key_hash=row["key_hash"], key_hint=row["key_hint"], name=row["name"],
        enabled=bool(row["enabled"]), created_at=row["created_at"], updated_at=row["updated_at"],
        expires_at=row["expires_at"], credits=row["credits"], credits_used=row["credits_used"],
        rate_limits=tuple(Window(int(w["limit"]), int(w["seconds"])) for w in json.loads(row["rate_limits"])),
        allowed_tasks=as_tuple(row["allowed_tasks"]), allowed_models=as_tuple(row["allowed_models"]),
        requests=row["requests"], prompt_tokens=row["prompt_tokens"], completion_tokens=row["completion_tokens"],
        charged=row["charged"], last_used_at=row["last_used_at"],
        token_quota=row["token_quota"], tpm_limit=row["tpm_limit"],
    )


@dataclass
class MinerLog:
    """One miner queried for a request, and how it went."""

    uid: int
    hotkey: str
    outcome: str  # ok | error | timeout | cancelled
    error: Optional[str] = None
    latency_ms: Optional[float] = None
    first_chunk_ms: Optional[float] = None
    completion_tokens: Optional[int] = None
    winner: bool = False


@dataclass
class RequestLog:
    """One public request: who, when, what, how it ended, what it used; one ``MinerLog`` per miner queried."""

    request_id: str
    key_id: str
    created_at: float
    path: str
    status: int
    outcome: str  # ok | rejected | error | miner_error | client_closed
    latency_ms: float
    task: Optional[str] = None
    strategy: Optional[str] = None
    model: Optional[str] = None
    stream: bool = False
    error: Optional[str] = None
    first_byte_ms: Optional[float] = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    charged: int = 0
    miner_uid: Optional[int] = None
    miner_hotkey: Optional[str] = None
    miners: list[MinerLog] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


LOG_COLUMNS = ("request_id, key_id, created_at, path, status, outcome, latency_ms, task, strategy, model, stream,"
               " error, first_byte_ms, prompt_tokens, completion_tokens, charged, miner_uid, miner_hotkey")
MINER_COLUMNS = "request_id, position, created_at, uid, hotkey, outcome, error, latency_ms, first_chunk_ms," \
                " completion_tokens, winner"


def log_row(log: RequestLog) -> tuple:
    return (log.request_id, log.key_id, float(log.created_at), log.path, log.status, log.outcome,
            float(log.latency_ms), log.task, log.strategy, log.model, int(log.stream), log.error,
            None if log.first_byte_ms is None else float(log.first_byte_ms), log.prompt_tokens,
            log.completion_tokens, log.charged, log.miner_uid, log.miner_hotkey)


def miner_rows(log: RequestLog) -> list[tuple]:
    return [(log.request_id, position, float(log.created_at), m.uid, m.hotkey, m.outcome, m.error,
             None if m.latency_ms is None else float(m.latency_ms),
             None if m.first_chunk_ms is None else float(m.first_chunk_ms), m.completion_tokens, int(m.winner))
            for position, m in enumerate(log.miners)]


def log_from_row(row: Any) -> RequestLog:
    return RequestLog(
        request_id=row["request_id"], key_id=row["key_id"], created_at=row["created_at"], path=row["path"],
        status=row["status"], outcome=row["outcome"], latency_ms=row["latency_ms"], task=row["task"],
        strategy=row["strategy"], model=row["model"], stream=bool(row["stream"]), error=row["error"],
        first_byte_ms=row["first_byte_ms"], prompt_tokens=row["prompt_tokens"],
        completion_tokens=row["completion_tokens"], charged=row["charged"], miner_uid=row["miner_uid"],
        miner_hotkey=row["miner_hotkey"],
    )


def miner_from_row(row: Any) -> MinerLog:
    return MinerLog(uid=row["uid"], hotkey=row["hotkey"], outcome=row["outcome"], error=row["error"],
                    latency_ms=row["latency_ms"], first_chunk_ms=row["first_chunk_ms"],
                    completion_tokens=row["completion_tokens"], winner=bool(row["winner"]))
