"""The pooled HTTP/1.1 client of the miner hop, against real servers on 127.0.0.1.

A scripted asyncio server answers each request with exactly the bytes a case
needs (lengths, chunks, early closes, garbage, silence), and counts the
connections it accepted, so reuse is observed rather than assumed.
"""

from __future__ import annotations

import asyncio

import pytest

from shared.http_pool import HIGH_WATER, HttpPool

OK = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 12\r\n\r\n{"ok": true}'


class Scripted:
    """Answers the n-th request with ``answers[n]``: bytes, a list of (delay, bytes), or "close"."""

    def __init__(self, answers):
        self.answers = list(answers)
        self.connections = 0
        self.requests: list[bytes] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length")))
                self.requests.append(head + await reader.readexactly(length))
                answer = self.answers.pop(0)
                if answer == "close":
                    break
                for delay, piece in answer if isinstance(answer, list) else [(0, answer)]:
                    await asyncio.sleep(delay)
                    if piece == "close":
                        writer.close()
                        return
                    writer.write(piece)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    async def __aenter__(self):
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc):
        self.server.close()


async def post(pool: HttpPool, port: int, read_timeout: float = 5.0):
    async with pool.post("127.0.0.1", port, "/v1/chat/completions", {"X-Test": "1"}, b'{"q": 1}',
                         connect_timeout=2, read_timeout=read_timeout) as response:
        return response.status, await response.read()


async def test_answers_are_read_and_the_connection_is_reused():
    async with Scripted([OK, OK, OK]) as server:
        pool = HttpPool()
        assert [await post(pool, server.port) for _ in range(3)] == [(200, b'{"ok": true}')] * 3
        assert server.connections == 1
        first = server.requests[0]
        assert first.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n") and b"X-Test: 1\r\n" in first
        assert first.endswith(b'\r\n\r\n{"q": 1}')
        await pool.close()


async def test_a_chunked_stream_arrives_piece_by_piece():
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    pieces = [(0, head + b"6\r\ndata: \r\n"), (0.2, b"5\r\nhello\r\n"), (0.2, b"0\r\n\r\n")]
    async with Scripted([pieces, OK]) as server:
        pool = HttpPool()
        loop = asyncio.get_running_loop()
        seen = []
        async with pool.post("127.0.0.1", server.port, "/", {}, b"", connect_timeout=2, read_timeout=5) as response:
            async for piece in response.content.iter_any():
                seen.append((round(loop.time(), 1), piece))
        assert [piece for _, piece in seen] == [b"data: ", b"hello"]
        assert seen[1][0] - seen[0][0] >= 0.1  # the second piece was handed over when it came, not at the end
        assert await post(pool, server.port) == (200, b'{"ok": true}') and server.connections == 1
        await pool.close()


async def test_silence_is_a_timeout_and_the_connection_is_not_reused():
    async with Scripted([[(1.0, OK)], OK]) as server:
        pool = HttpPool()
        with pytest.raises(TimeoutError):
            await post(pool, server.port, read_timeout=0.2)
        assert await post(pool, server.port) == (200, b'{"ok": true}') and server.connections == 2
        await pool.close()


async def test_the_silence_is_timed_per_wait_not_per_answer():
    """Each wait gets the whole ``read_timeout``: pieces 0.15 s apart pass a 0.25 s timeout though the answer takes
    0.6 s; a connection whose last request had a long timeout still times out a later request's short one."""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
    slow = [(0, head)] + [(0.15, b"1\r\nx\r\n")] * 4 + [(0, b"0\r\n\r\n")]
    async with Scripted([slow, OK, [(1.0, OK)]]) as server:
        pool = HttpPool()
        assert await post(pool, server.port, read_timeout=0.25) == (200, b"xxxx")
        await asyncio.sleep(0.4)  # the connection's timer has fired and is no longer armed
        assert await post(pool, server.port, read_timeout=30) == (200, b'{"ok": true}')  # a long timer armed
        started = asyncio.get_running_loop().time()
        with pytest.raises(TimeoutError):
            await post(pool, server.port, read_timeout=0.2)
        assert asyncio.get_running_loop().time() - started < 0.6 and server.connections == 1
        await pool.close()


async def test_a_total_timeout_ends_an_answer_that_trickles_in():
    """With ``total_timeout``, an answer whose pieces each come within ``read_timeout`` still ends with a
    ``TimeoutError`` once the total has passed (a miner dripping a byte at a time cannot hold a call); the next
    request on the pool, without a total, is not limited by the last one's."""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
    drip = [(0, head)] + [(0.1, b"1\r\nx\r\n")] * 30 + [(0, b"0\r\n\r\n")]
    slow_ok = [(0, head)] + [(0.1, b"1\r\nx\r\n")] * 6 + [(0, b"0\r\n\r\n")]
    async with Scripted([drip, slow_ok]) as server:
        pool = HttpPool()
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(TimeoutError):
            async with pool.post("127.0.0.1", server.port, "/v1/chat/completions", {}, b'{"q": 1}',
                                 connect_timeout=2, read_timeout=1.0, total_timeout=0.5) as response:
                await response.read()
        assert 0.45 <= loop.time() - started < 1.0
        assert await post(pool, server.port, read_timeout=1.0) == (200, b"xxxxxx")  # 0.6 s, no total: passes
        await pool.close()


async def test_a_close_mid_body_is_an_oserror():
    cut = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial"
    async with Scripted([[(0, cut), (0.05, "close")]]) as server:
        with pytest.raises(OSError, match="closed before the answer ended"):
            await post(HttpPool(), server.port)


async def test_a_kept_connection_closed_unanswered_is_retried_once_on_a_new_one():
    # the server answers once, then drops the kept connection as the next request arrives (a keep-alive race)
    async with Scripted([OK, "close", OK]) as server:
        pool = HttpPool()
        assert await post(pool, server.port) == (200, b'{"ok": true}')
        assert await post(pool, server.port) == (200, b'{"ok": true}')
        assert server.connections == 2 and len(server.requests) == 3


async def test_a_new_connection_closed_unanswered_is_an_oserror_and_not_retried():
    async with Scripted(["close", OK]) as server:
        with pytest.raises(OSError, match="closed before the answer ended"):
            await post(HttpPool(), server.port)
        assert server.connections == 1 and len(server.requests) == 1


async def test_a_kept_connection_that_answered_in_part_is_not_retried():
    cut = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial"
    async with Scripted([OK, [(0, cut[:20]), (0.05, "close")], OK]) as server:
        pool = HttpPool()
        await post(pool, server.port)
        with pytest.raises(OSError, match="closed before the answer ended"):
            await post(pool, server.port)
        assert server.connections == 1 and len(server.requests) == 2


async def test_garbage_is_an_oserror():
    async with Scripted([b"SMTP ready\r\n\r\n"]) as server:
        with pytest.raises(OSError, match="malformed"):
            await post(HttpPool(), server.port)


async def test_endless_headers_are_a_broken_answer_at_64_kib():
    """A server sending one header without end (httptools would keep growing it, copying it each time): the
    answer fails once its head passes 64 KiB, in well under a second, long before 16 MiB of it were sent;
    headers of 60 KiB in all are still an answer."""
    loop = asyncio.get_running_loop()
    endless = [(0, b"HTTP/1.1 200 OK\r\nX-Big: ")] + [(0, b"a" * 65536)] * 256
    async with Scripted([endless]) as server:
        started = loop.time()
        with pytest.raises(OSError, match="answer headers larger than 65536 bytes"):
            await post(HttpPool(), server.port)
        assert loop.time() - started < 1.0
    big_but_fine = OK.replace(b"Content-Length", b"X-Pad: " + b"p" * 60_000 + b"\r\nContent-Length")
    async with Scripted([big_but_fine]) as server:
        status, body = await post(HttpPool(), server.port)
        assert status == 200 and body == b'{"ok": true}'


@pytest.mark.parametrize("piece_size", [65536, 16])
async def test_a_reader_that_does_not_read_stops_the_socket_being_read(piece_size):
    """What a caller has not read yet stays bounded: past ``HIGH_WATER`` unread bytes the socket is paused (the
    server's writes back up) until the caller takes them; then the rest arrives, nothing lost. Tiny chunks,
    where the framing outweighs the text, pause it earlier, never later."""
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    size = 6 * HIGH_WATER if piece_size > 1024 else HIGH_WATER * 3 // 2
    chunk = b"%x\r\n%b\r\n" % (piece_size, b"x" * piece_size)
    per_write = max(1, 65536 // len(chunk))
    writes = [(0, head)] + [(0, chunk * per_write)] * (size // piece_size // per_write) + [(0, b"0\r\n\r\n")]
    async with Scripted([writes]) as server:
        pool = HttpPool()
        async with pool.post("127.0.0.1", server.port, "/", {}, b"", connect_timeout=2, read_timeout=5) as response:
            connection = response._connection
            await asyncio.sleep(0.5)  # nothing read meanwhile: the server writes as fast as it can
            unread = sum(map(len, connection.pieces))
            assert connection.paused and not connection.complete
            assert HIGH_WATER // 8 < unread <= HIGH_WATER + 256 * 1024
            body = await response.read()
        assert len(body) == size // piece_size // per_write * per_write * piece_size and set(body) == {ord("x")}
        await pool.close()


async def test_an_answer_without_length_ends_with_its_connection():
    unframed = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end"
    async with Scripted([[(0, unframed), (0.05, "close")], OK]) as server:
        pool = HttpPool()
        assert await post(pool, server.port) == (200, b"until the end")
        assert await post(pool, server.port) == (200, b'{"ok": true}') and server.connections == 2
        await pool.close()


async def test_an_abandoned_answer_closes_its_connection():
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    async with Scripted([[(0, head + b"3\r\none\r\n"), (0.3, b"0\r\n\r\n")], OK]) as server:
        pool = HttpPool()
        async with pool.post("127.0.0.1", server.port, "/", {}, b"", connect_timeout=2, read_timeout=5) as response:
            assert await anext(aiter(response.content.iter_any())) == b"one"
        assert await post(pool, server.port) == (200, b'{"ok": true}') and server.connections == 2
        await pool.close()


async def test_a_refused_connection_is_an_oserror():
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    with pytest.raises(OSError):
        await post(HttpPool(), port)
