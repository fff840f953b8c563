"""The last good metagraph, refreshed on a schedule (validator and miner alike).

A failed read keeps the previous copy: the validator keeps serving its
directory and a miner keeps admitting validators while the chain (or the
subnet file) is unreachable.
"""

from __future__ import annotations

import asyncio
import time
from typing import Optional

from loguru import logger

from .base import Chain, SubnetState


class MetagraphCache:
    def __init__(self, chain: Chain, every_seconds: float):
        self.chain = chain
        self.every_seconds = every_seconds
        self.state: Optional[SubnetState] = None
        self.failures = 0
        self.refreshed_at: Optional[float] = None  # when the last good read finished (readiness probes)

    async def refresh(self) -> bool:
        """Read the metagraph once; on failure keep the previous copy and say so."""
        try:
            self.state = await self.chain.metagraph()
        except Exception as exc:  # a chain or file error must never stop the process
            self.failures += 1
            logger.warning("metagraph refresh failed ({} in a row), keeping the last good copy: {}", self.failures, exc)
            return False
        self.failures = 0
        self.refreshed_at = time.time()
        return True

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.every_seconds)
            await self.refresh()

    def has_validator_permit(self, hotkey: str) -> bool:
        neuron = self.state.by_hotkey(hotkey) if self.state is not None else None
        return neuron is not None and neuron.validator_permit
