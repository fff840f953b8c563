"""A subnet described by a JSON file: the chain for the local demo and the tests.

The file holds what a metagraph would: neurons with hotkeys, addresses, stakes
and validator permits. Validators write their weights into it, and incentive is
recomputed from those weights (stake-weighted, normalised), so the loop closes
the way it does on chain: a miner that validators rate well earns incentive,
and the API's ``top_n`` routes to it.

Layout::

    {"netuid": 1, "block": 12, "weights_rate_limit_seconds": 0,
     "neurons": [{"uid": 0, "hotkey": "5F…", "coldkey": "5C…", "stake": 1000.0,
                  "validator_permit": true, "axon": "127.0.0.1:8091", "incentive": 0.0}],
     "weights": {"<validator hotkey>": {"set_at": 1700000000.0, "weights": {"3": 0.7}}}}

Every write is a read-modify-write under an advisory lock, finished by an atomic
rename, so any number of processes can share one file.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from .base import ChainError, Neuron, SubnetState, WeightResult


def read_subnet_file(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ChainError(f"local subnet file {path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise ChainError(f"local subnet file {path} is not valid JSON: {exc}") from None


def write_subnet_file(path: Path, data: dict[str, Any]) -> None:
    """Replace the file atomically so that readers never see half a write."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=1)
    os.replace(tmp, path)


@contextmanager
def locked(path: Path) -> Iterator[None]:
    lock_path = path.with_name(path.name + ".lock")
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def recompute_incentive(data: dict[str, Any]) -> None:
    """Incentive_j = sum over permitted validators of stake_v * w_vj, normalised to 1."""
    neurons = data["neurons"]
    stake_of = {n["hotkey"]: float(n.get("stake", 0.0)) for n in neurons if n.get("validator_permit")}
    totals = {n["uid"]: 0.0 for n in neurons}
    for hotkey, entry in data.get("weights", {}).items():
        stake = stake_of.get(hotkey)
        if not stake:
            continue
        weights = {int(uid): float(w) for uid, w in entry["weights"].items() if int(uid) in totals}
        norm = sum(weights.values())
        if norm <= 0:
            continue
        for uid, weight in weights.items():
            totals[uid] += stake * weight / norm
    grand = sum(totals.values())
    for neuron in neurons:
        neuron["incentive"] = totals[neuron["uid"]] / grand if grand > 0 else 0.0


def parse_state(data: dict[str, Any]) -> SubnetState:
    try:
        neurons = tuple(
            sorted(
                (
                    Neuron(
                        uid=int(n["uid"]),
                        hotkey=n["hotkey"],
                        coldkey=n.get("coldkey", ""),
                        stake=float(n.get("stake", 0.0)),
                        incentive=float(n.get("incentive", 0.0)),
                        validator_permit=bool(n.get("validator_permit", False)),
                        axon=n.get("axon"),
                        active=bool(n.get("active", True)),
                    )
                    for n in data["neurons"]
                ),
                key=lambda n: n.uid,
            )
        )
        return SubnetState(netuid=int(data.get("netuid", 1)), block=int(data.get("block", 0)), neurons=neurons)
    except (KeyError, TypeError, ValueError) as exc:
        raise ChainError(f"local subnet file is malformed: {exc!r}") from None


class LocalChain:
    """The :class:`~shared.chain.base.Chain` backed by a subnet file.

    ``hotkey`` is the caller's own hotkey: weights are recorded under it, and
    ``serve`` updates its neuron's address.
    """

    def __init__(self, path: str | os.PathLike[str], hotkey: str):
        self.path = Path(path)
        self.hotkey = hotkey

    async def metagraph(self) -> SubnetState:
        return parse_state(await asyncio.to_thread(read_subnet_file, self.path))

    async def set_weights(self, weights: dict[int, float]) -> WeightResult:
        return await asyncio.to_thread(self._set_weights, weights)

    async def serve(self, ip: str, port: int) -> None:
        await asyncio.to_thread(self._serve, f"{ip}:{port}")

    async def close(self) -> None:
        return None

    def _set_weights(self, weights: dict[int, float]) -> WeightResult:
        if any(w < 0 or w != w for w in weights.values()):
            return WeightResult(False, "weights must be non-negative numbers")
        with locked(self.path):
            data = read_subnet_file(self.path)
            me = next((n for n in data["neurons"] if n["hotkey"] == self.hotkey), None)
            if me is None:
                return WeightResult(False, "this hotkey is not registered on the subnet")
            if not me.get("validator_permit"):
                return WeightResult(False, "this hotkey has no validator permit")
            known = {n["uid"] for n in data["neurons"]}
            unknown = sorted(set(weights) - known)
            if unknown:
                return WeightResult(False, f"uids not on the subnet: {unknown}")
            previous = data.setdefault("weights", {}).get(self.hotkey)
            limit = float(data.get("weights_rate_limit_seconds", 0))
            now = time.time()
            if previous and now - previous["set_at"] < limit:
                wait = limit - (now - previous["set_at"])
                return WeightResult(
                    False, f"rate limited: retry in {wait:.1f}s", rate_limited=True, retry_after_seconds=wait
                )
            kept = {str(uid): float(w) for uid, w in sorted(weights.items()) if w > 0}
            data["weights"][self.hotkey] = {"set_at": now, "weights": kept}
            data["block"] = int(data.get("block", 0)) + 1
            recompute_incentive(data)
            write_subnet_file(self.path, data)
        return WeightResult(True, "weights recorded", uids=tuple(int(u) for u in kept))

    def _serve(self, address: str) -> None:
        with locked(self.path):
            data = read_subnet_file(self.path)
            me = next((n for n in data["neurons"] if n["hotkey"] == self.hotkey), None)
            if me is None:
                raise ChainError("this hotkey is not registered on the subnet")
            if me.get("axon") != address:
                me["axon"] = address
                data["block"] = int(data.get("block", 0)) + 1
                write_subnet_file(self.path, data)
