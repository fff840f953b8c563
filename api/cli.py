"""``python -m api.cli``: keys, usage and request logs for operators, against the workers' own store.

    python -m api.cli keys create --name alice --credits 1000 --rate-limits "60 per minute and 1000 per day"
    python -m api.cli keys list
    python -m api.cli keys import api_keys.json        # the subnet's keys, stored hashed
    python -m api.cli keys modify key_0123abcd --disable
    python -m api.cli usage key_0123abcd --since 2027-01-01
    python -m api.cli logs --uid 3 --since 2027-01-01T00:00:00Z --limit 20

It reads the API's settings (``.env.api`` or ``API_ENV_FILE``; ``DATABASE_URL``,
``DATABASE_SCHEMA``, ``DATA_DIR``) and calls the same code as the admin API,
so both print the same JSON. Running workers see a change within a second.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, Awaitable, Callable, Optional

import typer
from pydantic import ValidationError

from .key_admin import KeyAdmin, describe, log_view, usage_report
from .key_fields import KeySpec, parse_time
from .settings import load
from .store import Store, open_store

app = typer.Typer(help=__doc__.split("\n\n")[0], no_args_is_help=True, add_completion=False)
keys_app = typer.Typer(help="Create, list, inspect, modify and delete API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


def run(work: Callable[[Store], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        settings = load()
        store = await open_store(settings.database_url, settings.sqlite_path, settings.database_schema)
        try:
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(main())


def show(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, default=str, ensure_ascii=False))


def fail(message: str, code: int = 1) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def spec_of(**fields: Any) -> KeySpec:
    try:
        return KeySpec.model_validate({k: v for k, v in fields.items() if v is not None})
    except ValidationError as exc:
        fail("; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5]), 2)


def when(text: Optional[str]) -> Optional[float]:
    try:
        return parse_time(text)
    except ValueError as exc:
        fail(str(exc), 2)


RATE_LIMIT = typer.Option(None, help="requests per minute (the subnet's rate_limit)")
RATE_LIMITS = typer.Option(None, help="e.g. '60 per minute and 1000 per day'; 'none' clears")
CREDITS = typer.Option(None, help="requests the key may make, or 'unlimited'")
EXPIRES_AT = typer.Option(None, help="ISO 8601 or Unix seconds; 'never' clears")
EXPIRES_IN = typer.Option(None, help="seconds from now")
TASKS = typer.Option(None, "--tasks", help="allowed tasks, comma-separated; 'any' clears")
MODELS = typer.Option(None, "--models", help="allowed models, comma-separated ('default' included); 'any' clears")
TOKEN_QUOTA = typer.Option(None, help="tokens (prompt + completion) the key may use in all; 'unlimited' clears")
TPM_LIMIT = typer.Option(None, help="tokens per minute; 'none' clears")


@keys_app.command("create")
def create(name: str = typer.Option("", help="who the key is for"), rate_limit: Optional[int] = RATE_LIMIT,
           rate_limits: Optional[str] = RATE_LIMITS, credits: Optional[str] = CREDITS,
           expires_at: Optional[str] = EXPIRES_AT, expires_in: Optional[float] = EXPIRES_IN,
           tasks: Optional[str] = TASKS, models: Optional[str] = MODELS,
           token_quota: Optional[str] = TOKEN_QUOTA, tpm_limit: Optional[str] = TPM_LIMIT,
           disabled: bool = typer.Option(False, "--disabled", help="create it disabled")) -> None:
    """Create a key; it is printed once, here, and stored only as a hash."""
    spec = spec_of(name=name, rate_limit=rate_limit, rate_limits=rate_limits, credits=credits,
                   expires_at=expires_at, expires_in=expires_in, allowed_tasks=tasks, allowed_models=models,
                   token_quota=token_quota, tpm_limit=tpm_limit, enabled=False if disabled else None)
    plain, record = run(lambda store: KeyAdmin(store).create(spec))
    show({"message": "API key created", "api_key": plain, "id": record.id, "key": describe(record)})


@keys_app.command("list")
def list_keys(limit: int = 100, offset: int = 0, as_json: bool = typer.Option(False, "--json")) -> None:
    """Every key, masked."""
    records = run(lambda store: KeyAdmin(store).list(limit, offset))
    if as_json:
        show({"keys": [describe(r) for r in records], "count": len(records), "limit": limit, "offset": offset})
        return
    typer.echo(f"{'id':<21} {'hint':<17} {'name':<16} {'on':<3} {'credits':>9} {'requests':>9}  rate limits")
    for r in records:
        credits = "unlimited" if r.credits is None else str(r.credits)
        limits = ", ".join(w.describe() for w in r.rate_limits) or "-"
        flag = "no" if not r.enabled else ("exp" if r.expired() else "yes")
        typer.echo(f"{r.id:<21} {r.key_hint:<17} {r.name[:16]:<16} {flag:<3} {credits:>9} {r.requests:>9}  {limits}")


@keys_app.command("info")
def info(key: str = typer.Argument(..., help="key id (key_…) or the key itself")) -> None:
    """One key, masked, with its usage."""
    record = run(lambda store: KeyAdmin(store).find(key))
    if record is None:
        fail("API key not found")
    show(describe(record))


@keys_app.command("modify")
def modify(key: str = typer.Argument(..., help="key id (key_…) or the key itself"),
           name: Optional[str] = None, rate_limit: Optional[int] = RATE_LIMIT,
           rate_limits: Optional[str] = RATE_LIMITS, credits: Optional[str] = CREDITS,
           add_credits: Optional[int] = typer.Option(None, help="top up (negative takes away)"),
           expires_at: Optional[str] = EXPIRES_AT, expires_in: Optional[float] = EXPIRES_IN,
           tasks: Optional[str] = TASKS, models: Optional[str] = MODELS,
           token_quota: Optional[str] = TOKEN_QUOTA, tpm_limit: Optional[str] = TPM_LIMIT,
           enable: Optional[bool] = typer.Option(None, "--enable/--disable")) -> None:
    """Change what is given; leave the rest."""
    spec = spec_of(name=name, rate_limit=rate_limit, rate_limits=rate_limits, credits=credits,
                   add_credits=add_credits, expires_at=expires_at, expires_in=expires_in, allowed_tasks=tasks,
                   allowed_models=models, token_quota=token_quota, tpm_limit=tpm_limit, enabled=enable)
    record = run(lambda store: KeyAdmin(store).modify(key, spec))
    if record is None:
        fail("API key not found")
    show({"message": "API key modified", "key": describe(record)})


@keys_app.command("delete")
def delete(key: str = typer.Argument(..., help="key id (key_…) or the key itself")) -> None:
    """Delete a key; every worker refuses it within a second. Its logs stay."""
    if not run(lambda store: KeyAdmin(store).delete(key)):
        fail("API key not found")
    show({"message": "API key deleted"})


@keys_app.command("import")
def import_keys(path: Path = typer.Argument(..., help="the subnet's api_keys.json"),
                name: str = typer.Option("imported", help="name given to every imported key")) -> None:
    """Import the subnet's api_keys.json: each key keeps working, stored hashed; rate_limit per minute."""
    from .compat.subnet_keys import import_subnet_keys, read_subnet_keys  # noqa: PLC0415

    try:
        keys = read_subnet_keys(path)
    except ValueError as exc:
        fail(str(exc), 2)
    found = run(lambda store: import_subnet_keys(store, keys, name))
    show({"message": f"{len(found['imported'])} key(s) imported, {len(found['already_present'])} already present",
          **found})


@app.command()
def usage(key: Optional[str] = typer.Argument(None, help="key id or key; all keys when absent"),
          since: Optional[str] = None, until: Optional[str] = None) -> None:
    """Totals per key and per day (UTC), as ``GET /api_management/usage`` answers."""
    start, end = when(since), when(until)

    async def work(store: Store) -> dict:
        record = await KeyAdmin(store).find(key) if key else None
        if key and record is None:
            fail("API key not found")
        return await usage_report(store, record, start, end)

    show(run(work))


@app.command()
def logs(key: Optional[str] = typer.Option(None, help="key id or key"), since: Optional[str] = None,
         until: Optional[str] = None, uid: Optional[int] = typer.Option(None, help="requests that queried this uid"),
         hotkey: Optional[str] = None, status: Optional[int] = None, limit: int = 50,
         as_json: bool = typer.Option(False, "--json")) -> None:
    """Request logs, newest first, each with the miners it queried."""
    start, end = when(since), when(until)

    async def work(store: Store) -> list:
        key_id = None
        if key:
            record = await KeyAdmin(store).find(key)
            if record is None:
                fail("API key not found")
            key_id = record.id
        return await store.query_logs(key_id=key_id, since=start, until=end, uid=uid, hotkey=hotkey,
                                      status=status, limit=limit)

    found = run(work)
    if as_json:
        show({"logs": [log_view(log) for log in found], "count": len(found)})
        return
    for log in found:
        miners = " ".join(f"{m.uid}{'*' if m.winner else ''}:{m.outcome}" for m in log.miners) or "-"
        tokens = f"{log.prompt_tokens}+{log.completion_tokens}"
        typer.echo(f"{log_view(log)['created_at']} {log.key_id} {log.status} {log.outcome:<13} {log.task or '-':<14}"
                   f" {log.strategy or '-':<6} {log.latency_ms:>8.1f}ms {tokens:>11} miners {miners}")


@app.command()
def prune(older_than_days: Optional[float] = typer.Option(None, help="default: LOG_RETENTION_DAYS")) -> None:
    """Delete request logs older than the retention now (workers also do it hourly)."""
    import time

    days = older_than_days if older_than_days is not None else load().log_retention_days
    if days <= 0:
        fail("retention is 0 (keep forever): pass --older-than-days", 2)
    show({"deleted": run(lambda store: store.prune(time.time() - days * 86400))})


if __name__ == "__main__":
    app()
