"""The API worker's copy of the validator's miner directory.

Refreshed from the validator over the signed channel every few seconds. The
last good copy is kept in memory and on disk, so a worker keeps routing while
the validator restarts, and a worker that starts while the validator is down
routes from the copy its predecessor saved.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Optional

from loguru import logger
from pydantic import ValidationError

from shared.schemas import Directory
from shared.signed_http import SignedCallError, SignedClient


class DirectoryClient:
    def __init__(self, client: SignedClient, validator_url: str, validator_hotkey: str, cache_path: Path,
                 every_seconds: float):
        self.client = client
        self.validator_url = validator_url
        self.validator_hotkey = validator_hotkey
        self.cache_path = cache_path
        self.every_seconds = every_seconds
        self.directory: Optional[Directory] = None
        self.fetched_at: Optional[float] = None
        self.validator_reachable = False

    def load_cached(self) -> None:
        try:
            self.directory = Directory.model_validate_json(self.cache_path.read_bytes())
            logger.info("routing from the saved directory (block {}) until the validator answers",
                        self.directory.block)
        except (OSError, ValidationError):
            pass

    async def refresh(self) -> Directory:
        try:
            raw = await self.client.get_json(self.validator_url, "/directory", receiver=self.validator_hotkey,
                                             timeout=5.0)
            directory = Directory.model_validate(raw)
        except (SignedCallError, ValidationError) as exc:
            self.validator_reachable = False
            raise SignedCallError(f"directory refresh failed: {exc}") from None
        self.validator_reachable = True
        self.directory, self.fetched_at = directory, time.time()
        await asyncio.to_thread(self._save, directory)
        return directory

    def _save(self, directory: Directory) -> None:
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.cache_path.with_suffix(f".{id(self)}.tmp")
        tmp.write_text(directory.model_dump_json())
        tmp.replace(self.cache_path)

    async def run(self) -> None:
        failures = 0
        while True:
            try:
                await self.refresh()
                failures = 0
            except SignedCallError as exc:
                failures += 1
                if failures in (1, 10) or failures % 100 == 0:
                    logger.warning("{} (attempt {}); keeping the last good directory", exc, failures)
            await asyncio.sleep(self.every_seconds if failures == 0 else min(self.every_seconds, 1.0))
