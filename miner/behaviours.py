"""How well a reference miner answers: the demo runs one of each.

- ``good``: exactly what the backend produced.
- ``noisy``: the same stream with about 30% of its words swapped, chosen
  deterministically from the request, so it always differs from ``good``.
- ``slow``: waits ``SLOW_FIRST_CHUNK_SECONDS`` before the first chunk.
- ``copycat``: answers a little later, and as if it had been sent a neighbouring
  seed (``miner.backends.builtin``): under the validator's per-miner seeds that
  is what an answer copied from another miner looks like — a cheat that the
  validator must catch.
- ``broken``: per request (deterministically, from its seed and messages)
  either answers 500 at once, or sends the first chunk and then cuts the
  connection. A non-streamed request gets a 500 in both cases.
- ``junk_urls``, ``off_page``: chat like ``good``; their web retrieval answers
  go wrong (``miner.web_behaviours``), as ``noisy`` and ``broken`` ones do.

``MINER_CHUNK_DELAY`` spaces chunks out for every behaviour.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from typing import TYPE_CHECKING, Any, AsyncIterator

from shared.builtin_generator import VOCABULARY, DigestNumbers

from .backends.base import ChoiceStream
from .errors import MinerError
from .sse import CutConnection
from .web_behaviours import shape_results

if TYPE_CHECKING:
    from .web_index import WebIndex

BEHAVIOURS = ("good", "noisy", "slow", "broken", "copycat", "junk_urls", "off_page")
PLAIN = ("good", "junk_urls", "off_page")  # chat answers exactly as the backend produced them
SLOW_FIRST_CHUNK_SECONDS = 1.5
COPYCAT_DELAY_SECONDS = 0.3
NOISE_PERCENT = 30
_WORD = re.compile(r"[A-Za-z0-9']+")


def request_key(request: Any, model: str) -> bytes:
    """sha256 of the request's model, seed and messages: what deterministic choices hang on."""
    payload = {
        "model": model,
        "seed": request.seed,
        "messages": [{"role": m.role, "content": m.content} for m in request.messages],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode("utf-8")).digest()


def broken_mode(request: Any, model: str) -> str:
    """``"error"`` (500 before anything is sent) or ``"cut"`` (dies after the first chunk)."""
    return "error" if request_key(request, model)[0] % 2 == 0 else "cut"


def swap_word(piece: str, numbers: DigestNumbers) -> str:
    """``piece`` with its first word replaced by a different vocabulary word, spacing kept."""
    match = _WORD.search(piece)
    if match is None:
        return piece
    original = match.group(0).lower()
    replacement = VOCABULARY[numbers.below(len(VOCABULARY))]
    if replacement == original:
        replacement = VOCABULARY[(VOCABULARY.index(replacement) + 1) % len(VOCABULARY)]
    return piece[: match.start()] + replacement + piece[match.end() :]


class Behaviour:
    def __init__(self, name: str, chunk_delay: float = 0.0, slow_first_chunk: float = SLOW_FIRST_CHUNK_SECONDS):
        if name not in BEHAVIOURS:
            raise ValueError(f"unknown behaviour {name!r}; use one of {BEHAVIOURS}")
        self.name = name
        self.chunk_delay = chunk_delay
        self.slow_first_chunk = slow_first_chunk

    def check(self, request: Any, model: str) -> None:
        """Called before anything is sent: a broken miner may fail the request here."""
        if self.name == "broken" and broken_mode(request, model) == "error":
            raise MinerError(500, "the miner failed to generate an answer", code="broken_miner")

    async def web_results(self, index: "WebIndex", query: str, n_results: int) -> list[dict[str, str]]:
        """The web retrieval answer, shaped (and timed) by this behaviour."""
        if self.name == "broken":
            raise MinerError(500, "the miner failed to search", code="broken_miner")
        if self.name == "slow":
            await asyncio.sleep(self.slow_first_chunk)
        elif self.name == "copycat":
            await asyncio.sleep(COPYCAT_DELAY_SECONDS)
        return shape_results(self.name, index.search(query, n_results), query, index)

    def wrap(self, stream: ChoiceStream, request: Any, model: str, index: int) -> ChoiceStream:
        if self.name in PLAIN and self.chunk_delay <= 0:
            return stream  # exactly what the backend produced, as fast as it comes
        key = request_key(request, model) + index.to_bytes(2, "big")
        cut = self.name == "broken" and broken_mode(request, model) == "cut"
        return ChoiceStream(self._shape(stream.batches, key, index, cut), stream.outcome)

    def _first_wait(self, index: int) -> float:
        """How long the first piece of choice ``index`` is held back."""
        if index == 0 and self.name == "slow":
            return self.slow_first_chunk
        if index == 0 and self.name == "copycat":
            return COPYCAT_DELAY_SECONDS  # waiting for the copied answer
        return 0.0

    async def _shape(
        self, batches: AsyncIterator[list[str]], key: bytes, index: int, cut: bool
    ) -> AsyncIterator[list[str]]:
        numbers = DigestNumbers(key)
        sent = 0
        swapped = False
        try:
            async for batch in batches:
                if self.name == "noisy":
                    batch, swapped = add_noise(batch, numbers, swapped)
                if not batch:
                    continue
                if sent == 0 and self._first_wait(index) > 0:
                    await asyncio.sleep(self._first_wait(index))
                if cut:
                    yield batch[:1]
                    raise CutConnection()
                if self.chunk_delay <= 0:
                    yield batch
                    sent += len(batch)
                    continue
                for piece in batch:  # spaced out: one piece at a time
                    if sent > 0:
                        await asyncio.sleep(self.chunk_delay)
                    yield [piece]
                    sent += 1
        finally:
            close = getattr(batches, "aclose", None)
            if close is not None:
                await close()


def add_noise(batch: list[str], numbers: DigestNumbers, swapped: bool) -> tuple[list[str], bool]:
    """``batch`` with about a third of its words swapped, and whether any word has been swapped yet."""
    noisy = []
    for piece in batch:
        if _WORD.search(piece):
            # the first word always, then ~30%: a noisy answer never equals the good one
            if not swapped or numbers.below(100) < NOISE_PERCENT:
                piece = swap_word(piece, numbers)
                swapped = True
        noisy.append(piece)
    return noisy, swapped
