"""Ask every serving miner what it can do, signed, and remember the answers.

A miner that does not answer (or answers garbage) is recorded as unavailable
for everything — never as available for everything — once it has missed
``MISSES_BEFORE_UNAVAILABLE`` polls in a row: one slow answer under load does
not take a working miner out of routing and out of the synthetic rounds (where
its absence would, for one, let a copy-cat of it go unnoticed). Answers are
keyed by uid and hotkey together, so a uid re-registered under a new hotkey
starts unknown.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Optional

from loguru import logger
from pydantic import ValidationError

from shared.chain import Neuron, SubnetState
from shared.schemas import Availability
from shared.signed_http import SignedCallError, SignedClient

MISSES_BEFORE_UNAVAILABLE = 2
MAX_AVAILABILITY_BYTES = 1024 * 1024  # a miner's tasks and models fit in kilobytes; a bigger answer is refused


@dataclass(frozen=True)
class AvailabilityRecord:
    hotkey: str
    availability: Optional[Availability]
    checked_at: float  # when the miner last answered (or, if it never did, when it was last asked)
    misses: int = 0  # polls in a row it did not answer


class AvailabilityPoller:
    def __init__(self, client: SignedClient, timeout: float):
        self.client = client
        self.timeout = timeout
        self.records: dict[int, AvailabilityRecord] = {}

    def get(self, neuron: Neuron) -> Optional[AvailabilityRecord]:
        record = self.records.get(neuron.uid)
        return record if record is not None and record.hotkey == neuron.hotkey else None

    async def poll_one(self, neuron: Neuron) -> AvailabilityRecord:
        availability: Optional[Availability] = None
        try:
            raw = await self.client.get_json(neuron.axon, "/availability", receiver=neuron.hotkey, timeout=self.timeout,
                                             max_bytes=MAX_AVAILABILITY_BYTES)
            availability = Availability.model_validate(raw)
        except (SignedCallError, ValidationError, ValueError) as exc:
            logger.debug("availability of uid {} unknown: {}", neuron.uid, exc)
        previous = self.get(neuron)
        if availability is not None:
            record = AvailabilityRecord(neuron.hotkey, availability, time.time())
        elif previous is not None and previous.availability is not None and \
                previous.misses + 1 < MISSES_BEFORE_UNAVAILABLE:
            record = AvailabilityRecord(neuron.hotkey, previous.availability, previous.checked_at, previous.misses + 1)
        else:
            record = AvailabilityRecord(neuron.hotkey, None, time.time(), (previous.misses + 1) if previous else 1)
        self.records[neuron.uid] = record
        return record

    async def poll_all(self, state: SubnetState, self_hotkey: str) -> int:
        """Poll every neuron that serves an address; returns how many answered."""
        targets = [n for n in state.neurons if n.axon and n.hotkey != self_hotkey]
        current = {n.uid for n in state.neurons}
        for uid in list(self.records):
            if uid not in current:
                del self.records[uid]
        results = await asyncio.gather(*(self.poll_one(n) for n in targets))
        return sum(1 for r in results if r.availability is not None)
