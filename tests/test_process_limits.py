"""Strangers against our servers' processes: huge bodies, thousands of idle or slow connections.

Real processes of the local subnet (``local_subnet``), real signed requests. The
attacker comes from 127.0.0.2, the honest client from 127.0.0.1 (both loopback).
Memory is the real process's ``VmRSS``; held connections are its open descriptors.
"""

from __future__ import annotations

import json
import os
import resource
import select
import socket
import struct
import time
import urllib.request
from contextlib import contextmanager
from typing import ContextManager, Iterator, Optional

import pytest
from conftest_miner_helpers import config_thread
from process_tree import process_tree

from shared.serving import server_config
from shared.settings import CommonSettings

ATTACKER = "127.0.0.2"
IP_BIND_ADDRESS_NO_PORT = 24  # Linux: the source port is chosen at connect, per destination (spares the port range)
CONNECT_PORTS = 12_000
MiB = 1024 * 1024
HUGE = 200 * MiB
PER_CLIENT = CommonSettings().http_max_connections_per_client


# -- what a process holds ----------------------------------------------------------------------------------
def status_kib(pid: int, field: str) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def rss_kib(pid: int) -> int:
    return status_kib(pid, "VmRSS")


def reset_peak(pid: int) -> None:
    """From now on ``VmHWM`` is the peak RSS (a body read whole and freed again shows there, not in VmRSS)."""
    with open(f"/proc/{pid}/clear_refs", "w") as clear:
        clear.write("5")


def peak_kib(pid: int) -> int:
    return status_kib(pid, "VmHWM")


def open_descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


# -- what a stranger sends ---------------------------------------------------------------------------------
def push_body(port: int, path: str, headers: dict[str, str], total: int, *, chunked: bool = False,
              timeout: float = 30.0) -> tuple[Optional[int], int]:
    """Send a POST of ``total`` bytes as fast as the server takes them; (status or None, bytes of body sent)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {total}"
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{head}{framing}\r\n\r\n".encode())
    sock.setblocking(False)
    piece = b"x" * MiB
    if chunked:
        piece = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    pending, produced, sent, answer = memoryview(b""), 0, 0, b""
    deadline = time.monotonic() + timeout
    try:
        while b"\r\n\r\n" not in answer and time.monotonic() < deadline:
            readable, writable, _ = select.select([sock], [sock], [], 1.0)
            if readable:
                data = sock.recv(65536)
                if not data:
                    break
                answer += data
            elif writable:
                if not pending:
                    if produced >= total:
                        break
                    pending, produced = memoryview(piece), produced + MiB
                done = sock.send(pending)
                pending, sent = pending[done:], sent + done
        sock.setblocking(True)
        sock.settimeout(5)
        while b"\r\n\r\n" not in answer:
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    except (BrokenPipeError, ConnectionResetError, TimeoutError, BlockingIOError):
        pass
    finally:
        sock.close()
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else None
    return status, sent


def signed_looking(receiver: str, hotkey: str) -> dict[str, str]:
    """Fresh, well-formed btauth headers for the right receiver, with a signature nobody made."""
    return {"X-Bittensor-Version": "1", "X-Bittensor-Hotkey": hotkey, "X-Bittensor-Nonce": str(time.time_ns()),
            "X-Bittensor-Signature": "0x" + "00" * 64, "X-Bittensor-Receiver": receiver}


@pytest.mark.parametrize("target", ["miner", "validator"])
def test_a_huge_unsigned_body_is_refused_unread(local_subnet, target):
    """Unsigned 200 MB: 401 before the body is read; the process grows by a few MiB at most (was +350 MB)."""
    if target == "miner":
        process, port, path = local_subnet.processes["miner-1-good"], local_subnet.member("miner", "good").port, \
            "/v1/chat/completions"
    else:
        process, port, path = local_subnet.processes["validator"], local_subnet.validator_port, "/scoring"
    reset_peak(process.pid)
    before = rss_kib(process.pid)
    status, sent = push_body(port, path, {"Content-Type": "application/json"}, HUGE)
    time.sleep(0.3)
    grown = peak_kib(process.pid) - before
    print(f"{target}: RSS {before / 1024:.0f} MiB, peak +{grown / 1024:.1f} MiB under an unsigned 200 MB body "
          f"({sent / MiB:.0f} MiB of it sent, status {status})")
    assert status in (401, None) and sent < HUGE
    assert grown < 8 * 1024


@pytest.mark.parametrize("target", ["miner", "validator"])
def test_a_declared_oversize_body_is_413_before_it_is_read(local_subnet, target):
    validator = local_subnet.member("validator")
    if target == "miner":
        member = local_subnet.member("miner", "good")
        port, path, receiver = member.port, "/v1/chat/completions", member.hotkey
    else:
        port, path, receiver = local_subnet.validator_port, "/scoring", validator.hotkey
    status, sent = push_body(port, path, signed_looking(receiver, validator.hotkey), HUGE)
    assert status == 413 and sent < HUGE
    # headers that cannot pass are refused as they would be after the body, before it
    stale = {**signed_looking(receiver, validator.hotkey), "X-Bittensor-Nonce": str(time.time_ns() - 60 * 10**9)}
    assert push_body(port, path, stale, HUGE)[0] == 401
    elsewhere = signed_looking(local_subnet.member("miner", "noisy").hotkey, validator.hotkey)
    assert push_body(port, path, elsewhere, HUGE)[0] == 401


def test_an_undeclared_body_stops_being_read_at_the_limit(local_subnet):
    """Chunked, no Content-Length: read up to the miner's limit (16 MiB), then 413 and the connection closed."""
    member, validator = local_subnet.member("miner", "good"), local_subnet.member("validator")
    process = local_subnet.processes["miner-1-good"]
    reset_peak(process.pid)
    before = rss_kib(process.pid)
    status, sent = push_body(member.port, "/v1/chat/completions", signed_looking(member.hotkey, validator.hotkey),
                             HUGE, chunked=True)
    grown = peak_kib(process.pid) - before
    assert status == 413 and sent < 64 * MiB
    assert grown < 64 * 1024


# -- connections ---------------------------------------------------------------------------------------------
def flood_size() -> int:
    """As many connections as this test process may open, up to 20,000 (its own descriptors kept aside)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return max(1000, min(20_000, soft - open_descriptors(os.getpid()) - 500))


@contextmanager
def idle_connections(port: int, count: int, source: str = ATTACKER) -> Iterator[list[socket.socket]]:
    """``count`` connections from ``source`` that never send a byte; all reset on exit (no TIME_WAIT left).

    Linux gives connect() source ports of one parity (half the ephemeral range, ~14,000) and bind()
    the other: the first ``CONNECT_PORTS`` take theirs at connect (shared per destination, so nobody
    else's connections lose a port), the rest bind one first.
    """
    sockets: list[socket.socket] = []
    try:
        for index in range(count):
            sock = socket.socket()
            sockets.append(sock)
            sock.setblocking(False)
            if index < CONNECT_PORTS:
                sock.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((source, 0))
            sock.connect_ex(("127.0.0.1", port))
        yield sockets
    finally:
        for sock in sockets:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()


def settle(pids: list[int], seconds: float = 3.0) -> int:
    """The processes' open descriptors once they stop changing (the server accepts as fast as it can)."""
    last, deadline = -1, time.monotonic() + seconds
    while time.monotonic() < deadline:
        now = sum(open_descriptors(pid) for pid in pids)
        if now == last:
            return now
        last = now
        time.sleep(0.5)
    return last


def flood_then(port: int, pids: list[int], honest) -> None:
    """Hold a flood of idle connections on ``port`` and check ``honest()`` is still served and few are held."""
    count = flood_size()
    baseline = settle(pids, 1.0)
    started = time.monotonic()
    with idle_connections(port, count):
        opened = time.monotonic() - started
        held = settle(pids) - baseline
        began = time.monotonic()
        honest()
        answered = time.monotonic() - began
        print(f"{count} idle connections opened in {opened:.1f}s; the server holds {held} "
              f"(cap {PER_CLIENT} per address per process); the honest request took {answered:.2f}s")
        assert held <= len(pids) * (PER_CLIENT + 100)
    deadline = time.monotonic() + 10
    while sum(open_descriptors(pid) for pid in pids) > baseline + 50 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert sum(open_descriptors(pid) for pid in pids) <= baseline + 50  # every descriptor given back


def signed_get(url: str, path: str, signer, receiver: str) -> dict:
    request = urllib.request.Request(url + path, headers=signer.headers("GET", path, b"", receiver=receiver))
    with urllib.request.urlopen(request, timeout=15) as response:
        assert response.status == 200
        return json.loads(response.read())


def test_a_miner_under_an_idle_flood_still_serves_signed_requests(local_subnet, signer_for):
    member = local_subnet.member("miner", "good")
    pid = local_subnet.processes["miner-1-good"].pid
    signer = signer_for(local_subnet, "validator")
    flood_then(member.port, [pid], lambda: signed_get(f"http://{member.axon}", "/availability", signer, member.hotkey))


def test_the_validator_under_an_idle_flood_still_serves_signed_requests(local_subnet, signer_for):
    pid = local_subnet.processes["validator"].pid
    signer = signer_for(local_subnet, "validator")
    flood_then(local_subnet.validator_port, [pid],
               lambda: signed_get(local_subnet.validator_url, "/directory", signer, signer.hotkey))


def test_an_api_worker_under_an_idle_flood_still_serves_keyed_requests(local_subnet, api_key):
    supervisor = local_subnet.processes[local_subnet.api_names[0]].pid
    workers = [pid for pid, cmd in process_tree(supervisor).items() if "api" in cmd
               or b"multiprocessing" in open(f"/proc/{pid}/cmdline", "rb").read()]

    def honest() -> None:
        request = urllib.request.Request(local_subnet.api_url + "/miner_availabilities/get_available_miners",
                                         headers={"Authorization": f"Bearer {api_key}"})
        with urllib.request.urlopen(request, timeout=15) as response:
            assert response.status == 200

    flood_then(local_subnet.api_port, [supervisor, *workers], honest)


# -- timeouts, on the same protocol in a thread ----------------------------------------------------------------
async def hello(scope, receive, send) -> None:
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


def guarded_server(**settings) -> ContextManager[int]:
    return config_thread(server_config(hello, CommonSettings(**settings), log_level="warning", lifespan="off"))


def answer(sock: socket.socket) -> bytes:
    """One whole answer of :func:`hello`."""
    data = b""
    while not data.endswith(b"\r\n\r\nok"):
        data += sock.recv(1024)
    return data


def closed_by_server(sock: socket.socket, within: float) -> bool:
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_idle_and_slow_header_connections_are_closed():
    with guarded_server(http_header_timeout=0.5, http_keepalive_timeout=0.5) as port:
        idle = socket.create_connection(("127.0.0.1", port))
        slow = socket.create_connection(("127.0.0.1", port))
        slow.sendall(b"GET / HTTP/1.1\r\n")
        for _ in range(3):  # a header line now and then, never the end of the headers
            time.sleep(0.2)
            try:
                slow.sendall(b"X-Slow: 1\r\n")
            except OSError:
                break
        assert closed_by_server(idle, 2.0) and closed_by_server(slow, 2.0)
        kept = socket.create_connection(("127.0.0.1", port))  # a kept connection goes idle after its answer
        kept.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert answer(kept).startswith(b"HTTP/1.1 200")
        assert closed_by_server(kept, 2.0)


def test_huge_request_lines_and_headers_are_431_and_closed():
    """httptools keeps a request line or header of any size: 100 MB of one grew the process by ~170 MiB."""
    pid = os.getpid()
    with guarded_server(http_max_header_bytes=65536) as port:
        for start in (b"GET /", b"GET / HTTP/1.1\r\nX-Big: "):
            reset_peak(pid)
            before = rss_kib(pid)
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(start)
            sent = 0
            try:
                while sent < 100 * MiB:
                    sock.sendall(b"a" * 65536)
                    sent += 65536
            except OSError:
                pass
            assert sent < 8 * MiB and (peak_kib(pid) - before) < 16 * 1024
            sock.close()
        normal = socket.create_connection(("127.0.0.1", port))  # a big body after small headers is no concern here
        normal.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 300000\r\n\r\n" + b"x" * 300000)
        assert answer(normal).startswith(b"HTTP/1.1 200")
        normal.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # and the connection is still good
        assert answer(normal).startswith(b"HTTP/1.1 200")


def test_a_body_that_stops_arriving_closes_the_connection():
    with guarded_server(http_body_timeout=0.5) as port:
        slow = socket.create_connection(("127.0.0.1", port))
        slow.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
        time.sleep(0.3)
        slow.sendall(b"x" * 10)  # still coming: the timer starts again
        assert closed_by_server(slow, 2.0)
        whole = socket.create_connection(("127.0.0.1", port))
        whole.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
        assert answer(whole).startswith(b"HTTP/1.1 200")


PIECE = b"~" * 65536


def streaming_app(pieces: int, ended: list):
    """An app that answers with ``pieces`` pieces of 64 KiB as fast as the connection takes them, and notes in
    ``ended`` when it is done (once the connection is dropped, the server's ``send`` returns at once)."""

    async def app(scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        try:
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
            for _ in range(pieces):
                await send({"type": "http.response.body", "body": PIECE, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            ended.append(time.monotonic())

    return app


def streaming_server(app, coalesce: bool, **settings) -> ContextManager[int]:
    return config_thread(server_config(app, CommonSettings(**settings), coalesce=coalesce, log_level="warning",
                                       lifespan="off"))


def reader(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    sock.connect(("127.0.0.1", port))
    sock.sendall(b"GET /long HTTP/1.1\r\nHost: x\r\n\r\n")
    return sock


@pytest.mark.parametrize("coalesce", [False, True], ids=["plain", "coalescing"])
def test_an_answer_nobody_reads_drops_the_connection(coalesce):
    """A client asks for a 256 MiB answer and reads none of it: after ``HTTP_WRITE_TIMEOUT`` (1 s) with the
    server's write buffer full, the connection is dropped and the answer's task ends (it would wait for ever)."""
    ended: list = []
    with streaming_server(streaming_app(4096, ended), coalesce, http_write_timeout=1.0) as port:
        sock = reader(port)
        started = time.monotonic()
        deadline = started + 10
        while not ended and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ended, "the answer nobody read was still being written after 10 s"
        assert 1.0 <= ended[0] - started < 5.0
        sock.setblocking(True)
        sock.settimeout(5)
        received = 0
        try:
            while data := sock.recv(1 << 20):
                received += len(data)
        except ConnectionResetError:
            pass
        assert received < 64 * MiB  # what the kernel's buffers held, not the answer


@pytest.mark.parametrize("coalesce", [False, True], ids=["plain", "coalescing"])
def test_a_slow_but_steady_reader_gets_the_whole_answer(coalesce):
    """64 KiB every 20 ms: the write buffer fills and empties again and again, never for the 0.5 s timeout."""
    ended: list = []
    with streaming_server(streaming_app(64, ended), coalesce, http_write_timeout=0.5) as port:
        sock = reader(port)
        data = b""
        sock.settimeout(5)
        while not data.endswith(b"0\r\n\r\n"):
            piece = sock.recv(65536)
            assert piece, "the server closed the connection of a reader that kept reading"
            data += piece
            time.sleep(0.02)
        assert data.count(b"~") == 64 * len(PIECE) and ended


def test_connections_past_the_caps_are_reset_at_once():
    with guarded_server(http_max_connections=50, http_max_connections_per_client=5) as port:
        with idle_connections(port, 20) as flood:
            time.sleep(0.3)
            for sock in flood:
                sock.setblocking(True)
            refused = sum(closed_by_server(sock, 0.05) for sock in flood)
            assert refused == 15
            honest = socket.create_connection(("127.0.0.1", port))
            honest.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert answer(honest).startswith(b"HTTP/1.1 200")
            honest.close()
