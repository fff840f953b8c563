"""The store's schema, as numbered migrations applied once each, in order.

``schema_version`` holds the version reached. Every worker runs ``migrate`` at
start; a lock (an advisory lock on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite)
makes concurrent starts apply each migration once. To change the schema,
append a migration; never edit one that has shipped.

Types are written ``{float}`` / ``{int}`` and filled per dialect. Booleans are
integers 0/1 and lists are JSON text, so both dialects read rows the same way.
"""

from __future__ import annotations

TYPES = {
    "sqlite": {"float": "REAL", "int": "INTEGER"},
    "postgres": {"float": "DOUBLE PRECISION", "int": "BIGINT"},
}

V1_KEYS = [
    """CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        key_hash TEXT NOT NULL UNIQUE,
        key_hint TEXT NOT NULL,
        name TEXT NOT NULL DEFAULT '',
        enabled {int} NOT NULL DEFAULT 1,
        created_at {float} NOT NULL,
        updated_at {float} NOT NULL,
        expires_at {float},
        credits {int},
        credits_used {int} NOT NULL DEFAULT 0,
        rate_limits TEXT NOT NULL DEFAULT '[]',
        allowed_tasks TEXT,
        allowed_models TEXT,
        requests {int} NOT NULL DEFAULT 0,
        prompt_tokens {int} NOT NULL DEFAULT 0,
        completion_tokens {int} NOT NULL DEFAULT 0,
        charged {int} NOT NULL DEFAULT 0,
        last_used_at {float}
    )""",
    """CREATE TABLE usage_daily (
        key_id TEXT NOT NULL,
        day TEXT NOT NULL,
        requests {int} NOT NULL DEFAULT 0,
        prompt_tokens {int} NOT NULL DEFAULT 0,
        completion_tokens {int} NOT NULL DEFAULT 0,
        charged {int} NOT NULL DEFAULT 0,
        PRIMARY KEY (key_id, day)
    )""",
    """CREATE TABLE request_logs (
        request_id TEXT PRIMARY KEY,
        key_id TEXT NOT NULL,
        created_at {float} NOT NULL,
        path TEXT NOT NULL,
        task TEXT,
        strategy TEXT,
        model TEXT,
        stream {int} NOT NULL DEFAULT 0,
        status {int} NOT NULL,
        outcome TEXT NOT NULL,
        error TEXT,
        latency_ms {float} NOT NULL,
        first_byte_ms {float},
        prompt_tokens {int} NOT NULL DEFAULT 0,
        completion_tokens {int} NOT NULL DEFAULT 0,
        charged {int} NOT NULL DEFAULT 0,
        miner_uid {int},
        miner_hotkey TEXT
    )""",
    "CREATE INDEX request_logs_key_time ON request_logs (key_id, created_at)",
    "CREATE INDEX request_logs_time ON request_logs (created_at)",
    """CREATE TABLE miner_logs (
        request_id TEXT NOT NULL,
        position {int} NOT NULL,
        created_at {float} NOT NULL,
        uid {int} NOT NULL,
        hotkey TEXT NOT NULL,
        outcome TEXT NOT NULL,
        error TEXT,
        latency_ms {float},
        first_chunk_ms {float},
        completion_tokens {int},
        winner {int} NOT NULL DEFAULT 0,
        PRIMARY KEY (request_id, position)
    )""",
    "CREATE INDEX miner_logs_uid_time ON miner_logs (uid, created_at)",
    "CREATE INDEX miner_logs_hotkey_time ON miner_logs (hotkey, created_at)",
    """CREATE TABLE rate_events (
        key_id TEXT NOT NULL,
        at {float} NOT NULL
    )""",
    "CREATE INDEX rate_events_key_at ON rate_events (key_id, at)",
]

# Per-minute roll-ups of the request logs (what the dashboard charts, whatever the traffic) and dashboard sessions.
V2_DASHBOARD = [
    """CREATE TABLE usage_minutes (
        minute {int} NOT NULL,
        key_id TEXT NOT NULL,
        requests {int} NOT NULL DEFAULT 0,
        ok {int} NOT NULL DEFAULT 0,
        rejected {int} NOT NULL DEFAULT 0,
        errors {int} NOT NULL DEFAULT 0,
        client_closed {int} NOT NULL DEFAULT 0,
        prompt_tokens {int} NOT NULL DEFAULT 0,
        completion_tokens {int} NOT NULL DEFAULT 0,
        latency_ms_sum {float} NOT NULL DEFAULT 0,
        PRIMARY KEY (minute, key_id)
    )""",
    """CREATE TABLE latency_minutes (
        minute {int} NOT NULL,
        bucket {int} NOT NULL,
        requests {int} NOT NULL DEFAULT 0,
        PRIMARY KEY (minute, bucket)
    )""",
    """CREATE TABLE miner_minutes (
        minute {int} NOT NULL,
        uid {int} NOT NULL,
        hotkey TEXT NOT NULL,
        outcome TEXT NOT NULL,
        calls {int} NOT NULL DEFAULT 0,
        wins {int} NOT NULL DEFAULT 0,
        latency_ms_sum {float} NOT NULL DEFAULT 0,
        latency_n {int} NOT NULL DEFAULT 0,
        first_chunk_ms_sum {float} NOT NULL DEFAULT 0,
        first_chunk_n {int} NOT NULL DEFAULT 0,
        PRIMARY KEY (minute, uid, hotkey, outcome)
    )""",
    """CREATE TABLE dashboard_sessions (
        token_hash TEXT PRIMARY KEY,
        csrf_token TEXT NOT NULL,
        admin_fingerprint TEXT NOT NULL,
        created_at {float} NOT NULL,
        expires_at {float} NOT NULL
    )""",
    "CREATE INDEX dashboard_sessions_expiry ON dashboard_sessions (expires_at)",
]

# Conversations kept server-side (``/v1/conversations``), per API key.
V3_CONVERSATIONS = [
    # IF NOT EXISTS: a local demo's SQLite file may hold these tables from before they became a migration
    """CREATE TABLE IF NOT EXISTS conversations (
        id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        created_at {float} NOT NULL,
        metadata TEXT NOT NULL DEFAULT '{}'
    )""",
    """CREATE TABLE IF NOT EXISTS conversation_messages (
        conversation_id TEXT NOT NULL,
        seq {int} NOT NULL,
        message TEXT NOT NULL,
        created_at {float} NOT NULL,
        PRIMARY KEY (conversation_id, seq)
    )""",
]

# Token budgets per key (``api.token_budget``): a total token quota and a tokens-per-minute limit; NULL: none.
V4_TOKEN_BUDGETS = [
    "ALTER TABLE api_keys ADD COLUMN token_quota {int}",
    "ALTER TABLE api_keys ADD COLUMN tpm_limit {int}",
]

# The rate-limit log with a per-key sequence number ``n`` (1, 2, 3, … in time order), so that a check reads
# the number of events in a window from two index look-ups (the newest event's ``n`` minus the first one's in
# the window) instead of counting them: a key allowed a million requests a minute no longer costs a scan of
# its last minute per request. The events logged so far are numbered in the order of their times.
V5_RATE_LOG = [
    """CREATE TABLE rate_log (
        key_id TEXT NOT NULL,
        at {float} NOT NULL,
        n {int} NOT NULL
    )""",
    "INSERT INTO rate_log (key_id, at, n)"
    " SELECT key_id, at, ROW_NUMBER() OVER (PARTITION BY key_id ORDER BY at) FROM rate_events",
    "DROP TABLE rate_events",
    "CREATE INDEX rate_log_key_at ON rate_log (key_id, at)",
    "CREATE UNIQUE INDEX rate_log_key_n ON rate_log (key_id, n)",
]

# (version, what it does, statements)
MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (1, "keys, usage, request and miner logs, rate-limit events", V1_KEYS),
    (2, "per-minute roll-ups for the dashboard, dashboard sessions", V2_DASHBOARD),
    (3, "conversations", V3_CONVERSATIONS),
    (4, "token budgets per key", V4_TOKEN_BUDGETS),
    (5, "rate-limit log numbered per key", V5_RATE_LOG),
]

# The key table of the first release (SQLite only, no schema_version): its keys are carried over.
LEGACY_KEYS_COLUMNS = {"key_hash", "key_hint", "name", "rate_limit", "enabled", "created_at"}


def statements(dialect: str, version_statements: list[str]) -> list[str]:
    types = TYPES[dialect]
    return [s.replace("{float}", types["float"]).replace("{int}", types["int"]) for s in version_statements]
