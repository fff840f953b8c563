"""A deadline that moves at every step of a connection, on one loop timer re-armed only when it fires.

    deadline = LazyDeadline(loop, on_expiry)   # per connection
    deadline.set(10.0)                         # at a step: ``on_expiry()`` unless the next step comes in 10 s
    deadline.clear()                           # nothing to time now (a set timer finds nothing when it fires)
    deadline.stop()                            # the connection is gone: the timer too

Arming and cancelling a loop timer at each step (a request's headers, its body, the keep-alive wait after its
answer, each wait of our HTTP client for the answer) costs a timer's set-up every time. Here ``set`` only moves
a float, and the timer, when it fires, either calls ``on_expiry`` or re-arms itself for the deadline then in
force; it is re-armed early only when the new deadline is earlier than the one it waits for. The server's
connections (``shared.serving``) and our client's (``shared.http_pool``) use it, and so does the API
worker's backlog of responses' books (``api.backlog``) for its delay bound.
"""

from __future__ import annotations

import asyncio
from typing import Callable, Optional

RESOLUTION = 0.001  # uvloop's clock and timers count whole milliseconds: a deadline closer than this is due


class LazyDeadline:
    """See the module's docstring. The time the timer was armed for is kept here, not asked of the timer:
    uvloop answers ``call_at`` less than a millisecond ahead with a plain ``Handle`` (run on the next turn,
    no ``when()``), and ``_fire`` treats a deadline less than a millisecond ahead as reached, rather than
    re-arming on every turn until uvloop's millisecond clock catches up."""

    __slots__ = ("_loop", "_on_expiry", "when", "_timer", "_armed")

    def __init__(self, loop: asyncio.AbstractEventLoop, on_expiry: Callable[[], None]):
        self._loop = loop
        self._on_expiry = on_expiry
        self.when: Optional[float] = None  # the loop time of the deadline in force (None: nothing timed)
        self._timer: Optional[asyncio.Handle] = None
        self._armed = 0.0  # the loop time the timer was armed for

    def set(self, timeout: float) -> None:
        self.when = when = self._loop.time() + timeout
        timer = self._timer
        if timer is not None and self._armed > when:  # a shorter timeout than the one it waits for
            timer.cancel()
            timer = None
        if timer is None:
            self._arm(when)

    def _arm(self, when: float) -> None:
        self._armed = when
        self._timer = self._loop.call_at(when, self._fire)

    def clear(self) -> None:
        self.when = None

    def stop(self) -> None:
        self.when = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fire(self) -> None:
        self._timer = None
        when = self.when
        if when is None:
            return  # nothing timed now: the next ``set`` arms it again
        if self._loop.time() < when - RESOLUTION:
            self._arm(when)
            return
        self.when = None
        self._on_expiry()
