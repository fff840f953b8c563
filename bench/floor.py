"""The floor under our chain: two featureless relays where the API worker and the miner are.

    .venv/bin/python bench/floor.py [--seconds 5] [--runs 2] [--stream]

Starts ``bench/fake_upstream.py`` and two relays in front of it, each a separate Python process (uvloop,
httptools, one kept connection to the next hop): the client's request goes to relay 1, relay 1 sends the
body to relay 2, relay 2 to the upstream, and the answer comes back the same way. A relay checks nothing,
signs nothing, parses no JSON and keeps no record: it is what two Python processes in series cost before
any of the work our API worker and miner do (keys, credits, routing, signed hops, scoring, logs).

Load comes from ``bench/load.py`` at concurrency 1 against the upstream alone, one relay and two relays,
alternated ``--runs`` times; it prints requests/s, p50 and p99. Read it beside ``bench/bench_peer.py``:
two relays' requests/s over LiteLLM's is the most that any two-process Python chain could reach on this
machine, and the distance from there to ours is the price of what the chain does.

``python bench/floor.py --relay LISTEN_PORT NEXT_PORT`` runs one relay (what the benchmark starts).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import httptools

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


class Upstream(asyncio.Protocol):
    """One kept connection to the next hop; one request at a time (the relay's client waits for its answer)."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.answer: Optional[asyncio.Future] = None
        self.head: list[bytes] = []
        self.body: list[bytes] = []
        self.content_type = b"application/json"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"content-type":
            self.content_type = value

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        answer, self.answer = self.answer, None
        answer.set_result((self.content_type, b"".join(self.body)))
        self.body = []

    async def post(self, path: bytes, body: bytes) -> tuple[bytes, bytes]:
        self.answer = asyncio.get_running_loop().create_future()
        self.transport.write(b"POST " + path + b" HTTP/1.1\r\nHost: upstream\r\nContent-Type: application/json\r\n"
                             b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        return await self.answer


class Relay(asyncio.Protocol):
    """A client connection: each request's body goes to the next hop, its answer back as one response."""

    def __init__(self, upstreams: asyncio.Queue) -> None:
        self.upstreams = upstreams
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        body, self.body = b"".join(self.body), []
        asyncio.ensure_future(self.forward(self.url, body))

    async def forward(self, path: bytes, body: bytes) -> None:
        upstream = await self.upstreams.get()
        try:
            content_type, answer = await upstream.post(path, body)
        finally:
            self.upstreams.put_nowait(upstream)
        self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: " + content_type + b"\r\nContent-Length: "
                             + str(len(answer)).encode() + b"\r\n\r\n" + answer)


async def serve_relay(listen_port: int, next_port: int, connections: int = 64) -> None:
    loop = asyncio.get_running_loop()
    upstreams: asyncio.Queue = asyncio.Queue()
    for _ in range(connections):
        _, upstream = await loop.create_connection(Upstream, "127.0.0.1", next_port)
        upstreams.put_nowait(upstream)
    server = await loop.create_server(lambda: Relay(upstreams), "127.0.0.1", listen_port)
    print("relay ready", flush=True)
    await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--stream", action="store_true", help="streamed answers (each relay passes the whole body)")
    parser.add_argument("--relay", nargs=2, type=int, metavar=("LISTEN_PORT", "NEXT_PORT"))
    args = parser.parse_args()
    if args.relay:
        import uvloop

        uvloop.run(serve_relay(*args.relay))
        return

    from bench.bench_peer import spawn, stop, wait_http
    from bench.measure import LOAD_GENERATOR, machine_line, run_load
    from localnet.launcher import free_port

    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        ports = [free_port(), free_port(), free_port()]  # upstream, relay 2, relay 1
        processes = [spawn([sys.executable, str(ROOT / "bench" / "fake_upstream.py"), "--port", str(ports[0])],
                           directory / "upstream.log")]
        try:
            wait_http(f"http://127.0.0.1:{ports[0]}/v1/models", 30, processes[0])
            for listen, following in ((ports[1], ports[0]), (ports[2], ports[1])):
                processes.append(spawn([sys.executable, __file__, "--relay", str(listen), str(following)],
                                       directory / f"relay-{listen}.log"))
                wait_ready(directory / f"relay-{listen}.log", processes[-1])
            print(machine_line())
            print(LOAD_GENERATOR)
            targets = {"upstream": ports[0], "one relay": ports[1], "two relays": ports[2]}
            results: dict[str, list[dict]] = {name: [] for name in targets}
            stream = ["--stream"] if args.stream else []
            for _ in range(args.runs):
                for name, port in targets.items():
                    results[name].append(run_load(["--url", f"http://127.0.0.1:{port}", "--concurrency", "1",
                                                   "--seconds", str(args.seconds), *stream], {}))
            print(f"{'c=1, ' + ('stream' if args.stream else 'whole'):<14}{'rps (runs)':>24}{'p50 ms':>9}{'p99 ms':>9}"
                  f"{'errors':>8}")
            for name, runs in results.items():
                rates = " / ".join(f"{run['rps']:.0f}" for run in runs)
                print(f"{name:<14}{rates:>24}{statistics.median(r['p50_ms'] for r in runs):>9.3f}"
                      f"{statistics.median(r['p99_ms'] for r in runs):>9.3f}{sum(r['errors'] for r in runs):>8}")
        finally:
            for process in reversed(processes):
                stop(process)


def wait_ready(log: Path, process) -> None:
    """Until the relay says it is ready, or raise (also when it exited)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"relay exited: {log.read_text()[-500:]}")
        if log.exists() and "relay ready" in log.read_text():
            return
        time.sleep(0.1)
    raise TimeoutError("relay did not start")


if __name__ == "__main__":
    main()
