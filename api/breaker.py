"""A circuit breaker per miner, shared by every API worker of one host through a memory-mapped file.

    breakers = Breakers(path, failures=3, open_seconds=5, max_open_seconds=60, probe_seconds=15)
    breakers.observe(uid, hotkey, Outcome.BROKE)       # a miner call ended: ok, failed, or broke mid-stream
    blocked = breakers.blocked()                       # {uid: hotkey tag} of miners out of routing
    if breakers.claim_probe(uid, hotkey): ...          # half-open: this worker sends the one probe

States, per uid (and the hotkey holding it: a uid that changes hands starts closed)::

    closed ──(BREAKER_FAILURES failures in a row, or one mid-stream break)──► open
    open ──(BREAKER_OPEN_SECONDS pass; doubled at each re-open, up to BREAKER_MAX_OPEN_SECONDS)──► half-open
    half-open ──(one worker claims the probe; the probe answers)──► closed
    half-open ──(the probe fails)──► open (longer)

The probe is a shadow call: the miner answers a real request alongside the
miners that serve it, but its answer never reaches the client.

Why a file, not the store or Redis: the breaker is read on every request, and
a read here is a few loads from shared memory (no syscall, no round trip);
Redis is optional in this project and would add a network hop to every
request. It is host-local on purpose: a miner unreachable from one host may
be reachable from another, and each host learns within a few requests.
Writes (failures and transitions, rare) take ``flock`` on the file; a success
from a closed miner with no failures counted writes nothing.

Each slot is 32 bytes: hotkey tag (u64), failures in a row (u32), opens in a
row (u32), open until (f64, wall clock; 0 = closed), probe in flight until (f64).
The header holds a generation counter, bumped at every transition, so a
worker rebuilds its view of who is blocked only when something changed.
"""

from __future__ import annotations

import enum
import fcntl
import hashlib
import mmap
import os
import struct
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

MAX_UIDS = 1024  # subnets hold 256 uids today; a uid above this has no breaker (it is always routable)
HEADER = struct.Struct("<8sQ")  # magic, generation
SLOT = struct.Struct("<QIIdd")  # tag, failures, opens, open_until, probe_until
MAGIC = b"brkr0001"
SIZE = HEADER.size + SLOT.size * MAX_UIDS


class Outcome(enum.Enum):
    OK = "ok"
    FAILED = "failed"  # refused, non-2xx, garbage, timeout: before any content
    BROKE = "broke"  # failed after sending content (mid-stream)


def hotkey_tag(hotkey: str) -> int:
    return int.from_bytes(hashlib.blake2b(hotkey.encode(), digest_size=8).digest(), "little") or 1


class Breakers:
    def __init__(self, path: Path, *, failures: int = 3, open_seconds: float = 5.0, max_open_seconds: float = 60.0,
                 probe_seconds: float = 15.0):
        self.failures = failures
        self.open_seconds = open_seconds
        self.max_open_seconds = max_open_seconds
        self.probe_seconds = probe_seconds
        path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        with self._locked():
            if os.fstat(self.fd).st_size < SIZE:
                os.ftruncate(self.fd, SIZE)
            self.map = mmap.mmap(self.fd, SIZE)
            if self.map[:8] != MAGIC:
                self.map[:SIZE] = bytes(SIZE)
                HEADER.pack_into(self.map, 0, MAGIC, 1)
        self._seen_generation = -1
        self._blocked: dict[int, tuple[int, float]] = {}
        self._tags: dict[str, int] = {}

    def close(self) -> None:
        self.map.close()
        os.close(self.fd)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)

    def tag(self, hotkey: str) -> int:
        tag = self._tags.get(hotkey)
        if tag is None:
            if len(self._tags) > 10 * MAX_UIDS:
                self._tags.clear()
            tag = self._tags[hotkey] = hotkey_tag(hotkey)
        return tag

    def _slot(self, uid: int) -> tuple[int, int, int, float, float]:
        return SLOT.unpack_from(self.map, HEADER.size + SLOT.size * uid)

    def _write(self, uid: int, *values) -> None:
        SLOT.pack_into(self.map, HEADER.size + SLOT.size * uid, *values)

    def _bump(self) -> None:
        generation = HEADER.unpack_from(self.map, 0)[1]
        HEADER.pack_into(self.map, 0, MAGIC, generation + 1)

    # -- reading: every request ------------------------------------------------------------------------------
    def generation(self) -> int:
        return HEADER.unpack_from(self.map, 0)[1]

    def blocked(self) -> dict[int, tuple[int, float]]:
        """{uid: (hotkey tag, open until)} of every miner out of routing (open or half-open)."""
        generation = self.generation()
        if generation != self._seen_generation:
            slots = SLOT.iter_unpack(self.map[HEADER.size:SIZE])
            blocked = {uid: (tag, open_until) for uid, (tag, _, _, open_until, _) in enumerate(slots) if open_until}
            self._blocked, self._seen_generation = blocked, generation
        return self._blocked

    @property
    def seen_generation(self) -> int:
        """The generation that the last ``blocked()`` answered for."""
        return self._seen_generation

    def is_blocked(self, uid: int, hotkey: str) -> bool:
        entry = self.blocked().get(uid)
        return entry is not None and entry[0] == self.tag(hotkey)

    def state(self, uid: int, hotkey: str, now: Optional[float] = None) -> str:
        """``closed``, ``open`` or ``half-open`` (for metrics and tests)."""
        entry = self.blocked().get(uid)
        if entry is None or entry[0] != self.tag(hotkey):
            return "closed"
        now = time.time() if now is None else now
        return "open" if now < entry[1] else "half-open"

    def probe_due(self, uid: int, hotkey: str, now: float) -> bool:
        entry = self.blocked().get(uid)
        return entry is not None and entry[0] == self.tag(hotkey) and now >= entry[1]

    # -- transitions -----------------------------------------------------------------------------------------
    def claim_probe(self, uid: int, hotkey: str, now: Optional[float] = None) -> bool:
        """Half-open and no probe in flight: this worker sends the probe (True), no other worker will."""
        if not 0 <= uid < MAX_UIDS:
            return False
        now = time.time() if now is None else now
        tag = self.tag(hotkey)
        with self._locked():
            slot_tag, failures, opens, open_until, probe_until = self._slot(uid)
            if slot_tag != tag or not open_until or now < open_until or now < probe_until:
                return False
            self._write(uid, tag, failures, opens, open_until, now + self.probe_seconds)
            return True

    def observe(self, uid: int, hotkey: str, outcome: Outcome, now: Optional[float] = None) -> Optional[str]:
        """A call to the miner ended; returns the transition made (``opened``, ``closed``), if any."""
        if not 0 <= uid < MAX_UIDS:
            return None
        now = time.time() if now is None else now
        tag = self.tag(hotkey)
        slot_tag, failures, opens, open_until, probe_until = self._slot(uid)
        if outcome is Outcome.OK and slot_tag == tag and not failures and not open_until:
            return None  # the common case: healthy and known healthy, nothing to write
        with self._locked():
            slot_tag, failures, opens, open_until, probe_until = self._slot(uid)
            if slot_tag != tag:  # first sight of this hotkey on the uid: start closed
                failures, opens, open_until, probe_until = 0, 0, 0.0, 0.0
            if open_until and now < open_until:
                transition = None  # open: late outcomes of calls started before it opened change nothing
            elif outcome is Outcome.OK:
                transition = "closed" if open_until else None
                failures, opens, open_until, probe_until = 0, 0, 0.0, 0.0
            else:
                failures += 1
                if open_until or outcome is Outcome.BROKE or failures >= self.failures:
                    wait = min(self.max_open_seconds, self.open_seconds * 2 ** min(opens, 16))
                    failures, opens, open_until, probe_until = 0, opens + 1, now + wait, 0.0
                    transition = "opened"
                else:
                    transition = None
            self._write(uid, tag, failures, opens, open_until, probe_until)
            if transition:
                self._bump()
            return transition
