"""A change counter that every process of one host reads from shared memory.

    stamp = KeyStamp("/data/api.sqlite.keys-changed")
    stamp.value()        # on every request: a memory read, no system call
    stamp.bump()         # after any key changed, in any process

Eight bytes in a small file, mapped into each process; ``bump`` increments
them under an exclusive ``flock``, so concurrent bumps from several workers
never lose one. Readers see the new value as soon as it is written (the
mapping is the page cache), which is how a key revoked through one worker is
refused by every other worker on the host at once.
"""

from __future__ import annotations

import fcntl
import mmap
import os

SIZE = 8


class KeyStamp:
    def __init__(self, path: str):
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            if os.fstat(self._fd).st_size < SIZE:
                os.ftruncate(self._fd, SIZE)  # zero-filled; a file from an older version keeps its bytes
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._map = mmap.mmap(self._fd, SIZE)

    def value(self) -> int:
        return int.from_bytes(self._map[:SIZE], "little")

    def bump(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            self._map[:SIZE] = ((self.value() + 1) % 2**64).to_bytes(SIZE, "little")
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        self._map.close()
        os.close(self._fd)
