"""``shared.asgi.DisconnectWatch``: a stream's task is cancelled when its client leaves, and only then.

The watch steps the pending ``receive()`` by hand instead of running it in a task; these tests drive it with
the receives it meets (uvicorn's cycle waits on an ``asyncio.Event``, the lean cycle on a ``Signal``) and with
the odd ones (a receive that yields to the loop without a future, one that fails, a client already gone),
on uvloop (as served) and on asyncio's own loop.
"""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from shared.asgi import DisconnectWatch
from shared.lean_cycle import Signal


@pytest.fixture(params=["uvloop", "asyncio"])
def run(request):
    """Run a coroutine to its end on uvloop (as our servers run) or on asyncio's own loop."""
    return uvloop.run if request.param == "uvloop" else asyncio.run


class Client:
    """A receive in the shape of a server cycle's: messages queued by the test, waited for on ``event``."""

    def __init__(self, event) -> None:
        self.event = event
        self.messages: list[dict] = []
        self.waiting = 0  # receives currently waiting

    def tell(self, message: dict) -> None:
        self.messages.append(message)
        self.event.set()

    async def receive(self) -> dict:
        while not self.messages:
            self.event.clear()
            self.waiting += 1
            try:
                await self.event.wait()
            finally:
                self.waiting -= 1
        return self.messages.pop(0)


async def stream(watch_receive, produce) -> tuple[bool, bool]:
    """Run ``produce`` inside a watch in a task of its own; (cancelled, fired)."""
    fired = []

    async def body() -> None:
        with DisconnectWatch(watch_receive) as watch:
            try:
                await produce()
            finally:
                fired.append(watch.fired)

    task = asyncio.create_task(body())
    try:
        await task
    except asyncio.CancelledError:
        return True, fired[0]
    return False, fired[0]


@pytest.mark.parametrize("event_kind", [asyncio.Event, Signal])
def test_a_disconnect_cancels_the_stream_and_other_messages_do_not(run, event_kind):
    async def main() -> None:
        client = Client(event_kind())
        produced = []

        async def produce() -> None:
            for n in range(1000):
                produced.append(n)
                if n == 3:
                    client.tell({"type": "http.request", "body": b"", "more_body": False})  # not a disconnect
                if n == 6:
                    client.tell({"type": "http.disconnect"})
                await asyncio.sleep(0.001)

        cancelled, fired = await stream(client.receive, produce)
        assert cancelled and fired
        assert 7 <= len(produced) < 20  # stopped soon after the disconnect, not before it

    run(main())


@pytest.mark.parametrize("event_kind", [asyncio.Event, Signal])
def test_a_stream_that_ends_first_fires_nothing_and_leaves_no_waiter(run, event_kind):
    async def main() -> None:
        client = Client(event_kind())

        async def produce() -> None:
            await asyncio.sleep(0.01)

        assert await stream(client.receive, produce) == (False, False)
        assert client.waiting == 0  # the receive in progress was closed, not left waiting
        client.tell({"type": "http.disconnect"})  # a disconnect after the end cancels nothing
        await asyncio.sleep(0.01)

    run(main())


def test_a_client_already_gone_cancels_at_the_first_wait(run):
    async def main() -> None:
        client = Client(asyncio.Event())
        client.tell({"type": "http.disconnect"})
        reached = []

        async def produce() -> None:
            reached.append("before")
            await asyncio.sleep(0.05)
            reached.append("after")

        assert await stream(client.receive, produce) == (True, True)
        assert reached == ["before"]

    run(main())


def test_a_receive_that_yields_without_a_future_is_watched_by_a_task(run):
    async def main() -> None:
        messages = [{"type": "http.request", "body": b"x", "more_body": False}, {"type": "http.disconnect"}]

        async def receive() -> dict:
            for _ in range(3):
                await asyncio.sleep(0)  # a bare yield to the loop, not a future
            return messages.pop(0)

        async def produce() -> None:
            await asyncio.sleep(5)

        assert await asyncio.wait_for(stream(receive, produce), 2) == (True, True)
        assert messages == []

    run(main())


def test_a_receive_that_fails_stops_watching_and_the_stream_goes_on(run):
    async def main() -> None:
        event = asyncio.Event()

        async def receive() -> dict:
            await event.wait()
            raise RuntimeError("the server broke")

        async def produce() -> None:
            event.set()
            await asyncio.sleep(0.01)

        assert await stream(receive, produce) == (False, False)

    run(main())
