"""Keep the last good metagraph, refreshed on a schedule.

A failed read keeps the previous snapshot: the validator goes on serving its
directory from it while the chain (or the subnet file) is unreachable.
"""

from __future__ import annotations

import asyncio
from typing import Optional

from loguru import logger

from shared.chain import Chain, ChainError, SubnetState


class MetagraphCache:
    def __init__(self, chain: Chain, every_seconds: float):
        self.chain = chain
        self.every_seconds = every_seconds
        self.state: Optional[SubnetState] = None
        self.failures = 0

    async def sync(self) -> SubnetState:
        self.state = await self.chain.metagraph()
        return self.state

    async def run(self) -> None:
        while True:
            try:
                state = await self.sync()
                self.failures = 0
                logger.debug("metagraph synced at block {} ({} neurons)", state.block, len(state.neurons))
            except ChainError as exc:
                self.failures += 1
                logger.warning("metagraph sync failed ({} in a row), keeping the last good copy: {}", self.failures, exc)
            await asyncio.sleep(self.every_seconds)
