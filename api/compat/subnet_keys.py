"""The subnet's ``api_keys.json`` into the store: ``python -m api.cli keys import api_keys.json``.

The subnet's API keeps its keys in plain text, ``{"<key>": {"rate_limit": N, "usage": U}}``.
Each key is stored here as it is stored at creation: hashed, with a masked hint,
its ``rate_limit`` as requests per minute (what ``/api_management`` reads it as),
so the clients that hold those keys keep working unchanged. A key already in the
store is left as it is; running the import twice changes nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..key_admin import KeyAdmin
from ..key_fields import KeySpec
from ..keys import hash_key
from ..store import Store


def read_subnet_keys(path: Path) -> dict[str, dict[str, Any]]:
    """The file's keys and their fields; a ValueError says what is wrong with it."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) and k.strip() for k in data):
        raise ValueError(f"{path}: expected a JSON object of API keys, as the subnet's api_keys.json")
    return {key: fields if isinstance(fields, dict) else {} for key, fields in data.items()}


async def import_subnet_keys(store: Store, keys: dict[str, dict[str, Any]], name: str) -> dict:
    """``{"imported": [id…], "already_present": [id…]}``: ids only, never a key."""
    admin = KeyAdmin(store)
    imported, present = [], []
    for plain, fields in keys.items():
        existing = await store.key_by_hash(hash_key(plain))
        if existing is not None:
            present.append(existing.id)
            continue
        rate_limit = fields.get("rate_limit")
        spec = KeySpec(name=name, rate_limit=rate_limit if isinstance(rate_limit, int) and rate_limit > 0 else None)
        _, record = await admin.create(spec, plain=plain)
        imported.append(record.id)
    return {"imported": imported, "already_present": present}
