"""What a request's ``model`` means: aliases, miner pins, and names no miner serves.

    body = resolve_model(body, gateway, key)      # at parse time, before selection

In order:

1. ``model@<uid>`` or ``model@<hotkey>`` pins the request to that miner (Unify's
   ``model@provider``, with miners as providers): ``uids`` becomes ``[uid]`` and
   ``model`` the part before ``@`` (empty or ``default``: whatever the miner serves).
2. ``MODEL_ALIASES`` (``name=target`` pairs, comma-separated) renames what clients
   send to what miners serve, e.g. the subnet's documented
   ``hugging-quants/Meta-Llama-3.1-70B-Instruct-AWQ-INT4=builtin-large``; a target of
   ``default`` means any model.
3. ``UNKNOWN_MODEL`` decides what happens to a model that no available miner serves
   for the task: ``any`` (the default, as the subnet's own API does) routes to any
   miner and the answer's ``model`` names what served it; ``reject`` answers 404
   ``model_not_found``.

The key's model allow-list is checked against the name after aliasing, before
``any`` widens it, so a key limited to some models cannot reach others by naming
one that does not exist.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Optional

from shared.schemas import updated

from .access import require_allowed
from .errors import ApiError
from .keys import KeyRecord
from .schemas import DEFAULT_MODEL_NAMES, ChatCompletionRequest
from .selection import available_for, routing_memo

if TYPE_CHECKING:
    from .gateway import Gateway

UNKNOWN_MODEL_POLICIES = ("any", "reject")


@lru_cache(maxsize=8)
def parse_aliases(text: str) -> dict[str, Optional[str]]:
    """``"a=b, c=default"`` → ``{"a": "b", "c": None}``; a malformed pair is a ValueError."""
    aliases: dict[str, Optional[str]] = {}
    for pair in text.split(","):
        if not pair.strip():
            continue
        name, sep, target = pair.partition("=")
        name, target = name.strip(), target.strip()
        if not sep or not name or not target:
            raise ValueError(f"MODEL_ALIASES: expected 'name=target', got {pair.strip()!r}")
        aliases[name] = None if target in DEFAULT_MODEL_NAMES else target
    return aliases


def split_pin(model: Optional[str]) -> tuple[Optional[str], Optional[str]]:
    """``"m@3"`` → ``("m", "3")``; a name without ``@`` → ``(name, None)``."""
    if not model or "@" not in model:
        return model, None
    name, _, pin = model.rpartition("@")
    return name, pin.strip()


def pinned_uid(pin: str, directory) -> int:
    """The uid a pin names: a number, or a hotkey on the subnet (400 when neither)."""
    if pin.isdigit():
        return int(pin)
    if directory is not None:
        for miner in routing_memo(directory)["by_uid"].values():
            if miner.hotkey == pin:
                return miner.uid
    raise ApiError(400, f"model pin @{pin}: not a uid nor the hotkey of a miner on the subnet", "unknown_miner")


def resolve_model(body: ChatCompletionRequest, gateway: Gateway,
                  key: Optional[KeyRecord] = None) -> ChatCompletionRequest:
    """The request as routing should see it (the same object when nothing changes)."""
    settings = gateway.settings
    directory = gateway.directory.directory
    name, pin = split_pin(body.model)
    update: dict = {}
    if pin is not None:
        if not pin:
            raise ApiError(400, f"model {body.model!r}: nothing after '@' (expected a uid or a hotkey)",
                           "unknown_miner")
        uid = pinned_uid(pin, directory)
        if body.uids is not None and body.uids != [uid]:
            raise ApiError(400, f"model {body.model!r} pins uid {uid}, but uids {body.uids} were also given",
                           "conflicting_uids")
        update["uids"] = [uid]
    aliases = parse_aliases(settings.model_aliases)
    if name in aliases:
        name = aliases[name]
    if name in DEFAULT_MODEL_NAMES:
        name = None
    if key is not None:
        require_allowed(key, task=body.task, model=name)
    if (name is not None and pin is None and body.uids is None and settings.unknown_model == "any"
            and directory is not None and not available_for(directory, body.task, name)):
        name = None  # nobody serves it: any miner, and the answer says which model served it
    if name != body.model:
        update["model"] = name
    return updated(body, update) if update else body
