"""``bench/floor.py``: two featureless relays in front of the fake upstream pass its answers through, whole.

The floor is read against our chain, so a relay that answered something else (an empty body, another
request's answer) would make a fast floor out of nothing: the answers are checked through the real
``openai`` client, one relay and two in series, one request after another and several at once.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
from openai import AsyncOpenAI

from bench.fake_upstream import ANSWER
from bench.fake_upstream import serve as serve_fake_upstream
from localnet.launcher import free_port

ROOT = Path(__file__).resolve().parent.parent


async def start_relay(listen: int, following: int, log: Path) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, str(ROOT / "bench" / "floor.py"), "--relay", str(listen),
                                str(following)], stdout=open(log, "w"), stderr=subprocess.STDOUT)
    for _ in range(300):
        if "relay ready" in log.read_text():
            return process
        assert process.poll() is None, log.read_text()
        await asyncio.sleep(0.05)
    process.kill()
    raise TimeoutError(log.read_text())


@pytest.fixture
async def upstream_port():
    port = free_port()
    server = await serve_fake_upstream("127.0.0.1", port)
    try:
        yield port
    finally:
        server.close()


async def test_two_relays_in_series_pass_the_upstream_answers_through(upstream_port, tmp_path):
    second, first = free_port(), free_port()
    relays = [await start_relay(second, upstream_port, tmp_path / "second.log")]
    try:
        relays.append(await start_relay(first, second, tmp_path / "first.log"))
        for port in (second, first):
            client = AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)
            try:
                answer = await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
                assert answer.choices[0].message.content == ANSWER
                together = await asyncio.gather(*(client.chat.completions.create(
                    model="m", messages=[{"role": "user", "content": str(i)}]) for i in range(20)))
                assert [a.choices[0].message.content for a in together] == [ANSWER] * 20
            finally:
                await client.close()
    finally:
        for relay in relays:
            relay.kill()
            relay.wait()
