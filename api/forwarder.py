"""Forward what miners answered to the validator, in batches, off the request path.

Requests only append to a bounded buffer (``api.batching``). A background
loop sends batches to the validator's signed ``POST /scoring`` and keeps them
while the validator is down. Each item carries a unique ``request_id``, so a
batch resent after a lost reply is stored once.
"""

from __future__ import annotations

from shared.schemas import ScoringItem
from shared.signed_http import SignedClient

from .batching import BatchBuffer


class ScoringForwarder(BatchBuffer[ScoringItem]):
    what = "scoring items"

    def __init__(self, client: SignedClient, validator_url: str, validator_hotkey: str, *, batch_size: int,
                 interval: float, max_buffer: int):
        super().__init__(batch_size=batch_size, interval=interval, max_buffer=max_buffer)
        self.client = client
        self.validator_url = validator_url
        self.validator_hotkey = validator_hotkey

    async def send(self, batch: list[ScoringItem]) -> None:
        payload = b'{"items":[' + b",".join(item.model_dump_json().encode() for item in batch) + b"]}"
        await self.client.post_json(self.validator_url, "/scoring", payload, receiver=self.validator_hotkey,
                                    timeout=10.0)
