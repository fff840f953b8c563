"""Who is on the local subnet, and the subnet file that describes them.

uid 0 is the validator (stake and permit); then one reference miner per
behaviour; last, an "outsider": a registered hotkey with no permit and no
address, which the tests use to show that miners and the validator refuse it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from shared.chain.local import locked, read_subnet_file, write_subnet_file
from shared.wallet import ensure_wallet

VALIDATOR_STAKE = 10_000.0
MINER_STAKE = 10.0


@dataclass(frozen=True)
class Member:
    name: str  # wallet name
    role: str  # "validator", "miner" or "outsider"
    uid: int
    coldkey: str
    hotkey: str
    port: Optional[int] = None
    behaviour: Optional[str] = None

    @property
    def axon(self) -> Optional[str]:
        return f"127.0.0.1:{self.port}" if self.port else None


def create_members(
    wallet_path: Path, behaviours: list[str], validator_port: int, miner_ports: list[int]
) -> list[Member]:
    members = []
    coldkey, hotkey = ensure_wallet("localnet-validator", "default", str(wallet_path))
    members.append(Member("localnet-validator", "validator", 0, coldkey, hotkey, validator_port))
    for index, (behaviour, port) in enumerate(zip(behaviours, miner_ports), start=1):
        name = f"localnet-miner-{index}"
        coldkey, hotkey = ensure_wallet(name, "default", str(wallet_path))
        members.append(Member(name, "miner", index, coldkey, hotkey, port, behaviour))
    coldkey, hotkey = ensure_wallet("localnet-outsider", "default", str(wallet_path))
    members.append(Member("localnet-outsider", "outsider", len(members), coldkey, hotkey))
    return members


def subnet_document(members: list[Member], netuid: int = 1) -> dict:
    miners = [m for m in members if m.role == "miner"]
    return {
        "netuid": netuid,
        "block": 1,
        "weights_rate_limit_seconds": 0,
        "neurons": [
            {
                "uid": m.uid,
                "hotkey": m.hotkey,
                "coldkey": m.coldkey,
                "stake": VALIDATOR_STAKE if m.role == "validator" else MINER_STAKE,
                "validator_permit": m.role == "validator",
                "axon": m.axon if m.role == "miner" else None,
                "incentive": 1.0 / len(miners) if m.role == "miner" else 0.0,
            }
            for m in members
        ],
        "weights": {},
    }


def write_subnet(path: Path, members: list[Member]) -> None:
    """Write the subnet file, keeping recorded weights when the same hotkeys are already in it."""
    document = subnet_document(members)
    if path.exists():
        with locked(path):
            try:
                old = read_subnet_file(path)
            except Exception:
                old = None
            if old and [n["hotkey"] for n in old["neurons"]] == [n["hotkey"] for n in document["neurons"]]:
                for new, previous in zip(document["neurons"], old["neurons"]):
                    new["incentive"] = previous.get("incentive", new["incentive"])
                document["weights"] = old.get("weights", {})
                document["block"] = old.get("block", 1)
            write_subnet_file(path, document)
    else:
        write_subnet_file(path, document)


def describe(members: list[Member]) -> str:
    return json.dumps([{"uid": m.uid, "role": m.role, "behaviour": m.behaviour, "axon": m.axon} for m in members])
