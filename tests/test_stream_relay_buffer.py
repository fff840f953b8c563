"""What a stream may leave waiting in the API worker for a client that reads slower than the miner sends.

The winner's miner is read at its own pace (its timings are scored, so a client must not slow it down), and
the client is written to at the client's: a slow but steady reader (one that never trips
``HTTP_WRITE_TIMEOUT``) had the worker hold the whole answer as parsed chunks, five times its bytes, for as
long as it liked. Now what waits (``api.miner_call.Relay``) is only what the client may be shown of each chunk
(``ShownChoice``), about the stream's own bytes, and ``STREAM_RELAY_BUFFER_BYTES`` caps it: past it what waits
is let go at once, and the client's stream ends with a ``client_too_slow`` error event. Losers of a race and the
calls of mixture's and reasoning's rounds keep nothing for a client (their records are still scored).

The rule is tested on ``MinerCall`` against scripted miners on 127.0.0.1, and through the stack with the
``firehose`` miner (tests/dishonest_miner.py: 32 MiB here, as fast as it can) and clients on real sockets.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import socket

import bittensor as bt
import gateway_client as gw
import pytest
from test_miner_call_limits import END, MINER, address, content, scripted_miner

from api.miner_call import OVERRUN, CallLimits, MinerCall
from shared.auth import Signer
from shared.schemas import MinerRecord
from shared.signed_http import SignedClient

PIECE = "x" * 16383 + " "
PIECES = 64  # 1 MiB of content, sent after the first piece


async def started_call(port: int, relay_limit: int | None, relayed: bool = True) -> tuple[MinerCall, SignedClient]:
    """A streamed call to the scripted miner on ``port``, committed (its first content has come)."""
    client = SignedClient(Signer(bt.sp_core.Keypair.create_from_uri("//Alice")))
    record = MinerRecord(uid=1, hotkey=MINER.ss58_address, address=address(port, "pool"), incentive=0.1, stake=1.0)
    call = MinerCall(record, relayed=relayed)
    call.start(client, b'{"stream": true}', CallLimits(2.0, 5.0, 2.0, None, None, relay_limit))
    assert await call.first
    return call, client


def fast_stream() -> list[tuple[float, bytes]]:
    """One piece, then (after the caller has had time to pick its winner) 1 MiB of content at once, then the end."""
    return [(0, content(PIECE)), (0.3, b"".join(content(PIECE) for _ in range(PIECES))), (0, END)]


async def test_a_relay_whose_client_falls_behind_lets_its_chunks_go_at_the_limit():
    async with scripted_miner(fast_stream()) as miner:
        call, client = await started_call(miner.port, relay_limit=256 * 1024)
        relay = call.become_winner()  # the client's side never takes: a client that reads nothing
        await call.task
        await client.close()
    assert relay.overrun
    assert await relay.take() == [OVERRUN]  # the 1 MiB that came in is not held
    assert call.status == "ok" and call.record.text == PIECE * (PIECES + 1)  # read whole all the same: scored


async def test_a_relay_under_its_limit_keeps_every_chunk_for_the_client():
    async with scripted_miner(fast_stream()) as miner:
        call, client = await started_call(miner.port, relay_limit=4 * 1024 * 1024)
        relay = call.become_winner()
        await call.task
        await client.close()
    taken = await relay.take()
    assert not relay.overrun and taken[-1] is not OVERRUN
    texts = [shown[0][2] for shown in taken if isinstance(shown, list)]  # each chunk's (index, role, text, reason)
    assert "".join(texts) == PIECE * (PIECES + 1)


async def test_a_loser_keeps_its_record_but_not_its_chunks():
    async with scripted_miner(fast_stream()) as miner:
        loser, client = await started_call(miner.port, relay_limit=None)
        kept, _ = await started_call(miner.port, relay_limit=None)  # the control: nobody told it
        round_call, _ = await started_call(miner.port, relay_limit=None, relayed=False)
        loser.lost()
        await asyncio.gather(loser.task, kept.task, round_call.task)
        await client.close()
    whole = PIECE * (PIECES + 1)
    assert loser.backlog == [] and loser.record.text == whole
    assert round_call.backlog == [] and round_call.record.text == whole
    assert len(kept.backlog) == PIECES + 1 and kept.backlog[0] == [(0, False, PIECE, None)]


# -- through the stack ------------------------------------------------------------------------------------

FIREHOSE_PIECES = 512  # of 64 KiB: 32 MiB, within the answer cap and the event budget of 256 tokens
FIREHOSE_BYTES = FIREHOSE_PIECES * 65536
REQUEST = {"model": "default", "stream": True, "max_tokens": 256, "uids": [1],
           "messages": [{"role": "user", "content": "Say everything at once."}]}


@pytest.fixture(scope="module")
def firehose(tmp_path_factory, subnet_factory):
    net = subnet_factory(tmp_path_factory.mktemp("relay-buffer"), behaviours=["firehose"], api_workers=1,
                         miner_modules=["tests.dishonest_miner"],
                         extra_env={"STREAM_RELAY_BUFFER_BYTES": str(4 * 1024 * 1024), "HTTP_WRITE_TIMEOUT": "60",
                                    "FIREHOSE_PIECES": str(FIREHOSE_PIECES)})
    yield net
    net.stop()


class SmallWindow(http.client.HTTPConnection):
    """A client whose socket takes little at a time: what it does not read stays in the server's buffers."""

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.settimeout(60)
        self.sock.connect((self.host, self.port))


def stream_text(body: str) -> tuple[int, list[dict]]:
    """(characters of content, error objects) in an SSE body."""
    chars, errors = 0, []
    for line in body.splitlines():
        if line.startswith("data: {"):
            event = json.loads(line[6:])
            if "error" in event:
                errors.append(event["error"])
            for choice in event.get("choices", []):
                chars += len(choice["delta"].get("content") or "")
    return chars, errors


def post(connection: http.client.HTTPConnection, key: str) -> http.client.HTTPResponse:
    connection.request("POST", "/v1/chat/completions", json.dumps(REQUEST),
                       {"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    return connection.getresponse()


async def test_a_client_that_reads_slower_than_the_miner_sends_is_stopped_at_the_buffer(firehose):
    answer = await gw.admin(firehose, "POST", "/create-api-key/?name=slow")
    key, key_id = answer.body["api_key"], answer.body["id"]
    port = int(firehose.api_url.rsplit(":", 1)[1])
    connection = SmallWindow("127.0.0.1", port)
    response = await asyncio.to_thread(post, connection, key)
    assert response.status == 200
    await asyncio.sleep(3)  # the miner sends 32 MiB meanwhile; the sockets' buffers hold a few of them
    body = (await asyncio.to_thread(response.read)).decode()
    connection.close()
    chars, errors = stream_text(body)
    assert errors and errors[-1]["type"] == "client_too_slow", errors
    assert body.rstrip().endswith("data: [DONE]")
    assert 0 < chars < FIREHOSE_BYTES // 2, chars  # the rest was let go, not held for it

    async def logged():
        logs = (await gw.admin(firehose, "GET", f"/logs?key={key_id}&since=2020-01-01")).body["logs"]
        return logs or None

    logs = await gw.eventually(logged, timeout=10)
    assert logs[0]["outcome"] == "client_closed" and "slower than the miner" in logs[0]["error"], logs


async def test_a_client_that_keeps_up_gets_the_whole_firehose(firehose):
    """A client reading at the socket's pace: 32 MiB in 512 events, against a buffer of 4 MiB. (The official SDK
    parses each event into objects and falls behind this miner by more than 4 MiB: hence the default, the
    answer cap, which stops no stream for its client's pace.)"""
    key = firehose.create_api_key("prompt")
    port = int(firehose.api_url.rsplit(":", 1)[1])
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    response = await asyncio.to_thread(post, connection, key)
    body = (await asyncio.to_thread(response.read)).decode()
    connection.close()
    chars, errors = stream_text(body)
    assert not errors and chars == FIREHOSE_BYTES, (chars, errors)
