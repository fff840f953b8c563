"""Issue 12, the API worker's half: what a client or a stranger sends costs what it asks for, no more.

Two API processes on two ports over PostgreSQL + Redis (the probes' setup), a
good and a slow miner. Each test attacks one rule of docs/hardening-api.md:
work admitted per unit, bodies bounded before authentication, key guessing
throttled per client address (X-Forwarded-For only from a trusted proxy), and
no charge for an answer nobody read. Clients come from other loopback
addresses (127.0.0.3, …) so that one test's throttle never meets another's.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from pathlib import Path

import aiohttp
import pytest
from gateway_client import admin, call, eventually
from store_fixtures import drop_redis_prefix, drop_schema, unique_name

from localnet.launcher import free_port

MESSAGES = [{"role": "user", "content": "hi"}]
MIB = 1024 * 1024
PROXY = "127.0.0.2"  # TRUSTED_PROXIES in this module


@pytest.fixture(scope="module")
def net(tmp_path_factory, subnet_factory, postgres_url, redis_url):
    schema, prefix = unique_name("test_harden"), unique_name("test") + ":"
    env = {"DATABASE_URL": postgres_url, "DATABASE_SCHEMA": schema, "REDIS_URL": redis_url, "REDIS_PREFIX": prefix,
           "TRUSTED_PROXIES": PROXY, "AUTH_FAILURE_LIMITS": "10 per minute"}
    subnet = None
    try:
        subnet = subnet_factory(tmp_path_factory.mktemp("hardening"), behaviours=["good", "slow"], api_workers=1,
                                api_ports=[free_port(), free_port()], extra_env=env)
        yield subnet
    finally:
        if subnet is not None:
            subnet.stop()
        drop_schema(postgres_url, schema)
        drop_redis_prefix(redis_url, prefix)


async def new_key(net, query: str = "") -> tuple[str, str]:
    answer = await admin(net, "POST", f"/create-api-key/{query}")
    assert answer.status == 200, answer
    return answer.body["api_key"], answer.body["id"]


async def credits_left(net, key: str) -> int:
    return (await call("GET", net.api_url + "/v1/credits", headers={"Authorization": f"Bearer {key}"})).body["credits"]


async def logs_of(net, key_id: str, count: int = 1):
    logs = (await admin(net, "GET", f"/logs?key={key_id}")).body["logs"]
    return logs if len(logs) >= count else None


def session_from(address: str) -> aiohttp.ClientSession:
    """A client whose TCP peer address, as the API sees it, is ``address`` (any 127.x works on loopback)."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(address, 0), force_close=True))


# -- 1. cost follows work ----------------------------------------------------------------------------------------

async def test_a_thousand_prompts_are_refused_and_cost_nothing(net):
    key, key_id = await new_key(net, "?credits=10")
    answer = await call("POST", net.api_url + "/v1/completions", headers={"api-key": key},
                        json={"prompt": [f"say {i}" for i in range(1000)], "max_tokens": 2})
    assert answer.status == 400, answer
    assert answer.body["error"]["code"] == "too_many_prompts"
    assert answer.body["error"]["type"] == "invalid_request_error"
    assert await credits_left(net, key) == 10


async def test_prompts_times_n_are_charged_and_rate_limited_as_units(net):
    key, key_id = await new_key(net, "?credits=100&rate_limits=10%20per%20minute")
    body = {"prompt": ["one", "two", "three", "four"], "n": 2, "max_tokens": 2}
    answer = await call("POST", net.api_url + "/v1/completions", headers={"api-key": key}, json=body)
    assert answer.status == 200, answer
    assert len(answer.body["choices"]) == 8
    assert await eventually(lambda: _credits_are(net, key, 92), timeout=3)  # 4 prompts × n=2: 8 units
    log = (await eventually(lambda: logs_of(net, key_id), timeout=5))[0]
    assert log["charged"] == 8
    # 8 of the 10 slots this minute are used: another 8-unit request waits, on either worker.
    again = await call("POST", net.api_urls[1] + "/v1/completions", headers={"api-key": key}, json=body)
    assert again.status == 429 and int(again.headers["Retry-After"]) >= 1, again
    assert await eventually(lambda: _credits_are(net, key, 92), timeout=3)  # its first unit given back
    # ... and one larger than the whole window can never be admitted: 400, not a 429 to wait out.
    wide = await call("POST", net.api_url + "/v1/completions", headers={"api-key": key},
                      json={**body, "prompt": ["p"] * 11, "n": 1})
    assert wide.status == 400 and wide.body["error"]["code"] == "too_many_units", wide


async def test_more_units_than_max_request_units_are_refused(net):
    key, _ = await new_key(net, "?credits=1000")
    # 32 prompts (the most) × n=8 = 256 units > MAX_REQUEST_UNITS (64)
    answer = await call("POST", net.api_url + "/v1/completions", headers={"api-key": key},
                        json={"prompt": ["x"] * 32, "n": 8, "max_tokens": 2})
    assert answer.status == 400 and answer.body["error"]["code"] == "too_many_units", answer
    assert await eventually(lambda: _credits_are(net, key, 1000), timeout=3)


async def test_a_chat_with_n_costs_n(net):
    key, _ = await new_key(net, "?credits=10")
    answer = await call("POST", net.api_url + "/v1/chat/completions", headers={"api-key": key},
                        json={"messages": MESSAGES, "n": 3, "max_tokens": 2})
    assert answer.status == 200, answer
    assert await eventually(lambda: _credits_are(net, key, 7), timeout=3)


# -- 2. bounded bodies -------------------------------------------------------------------------------------------

def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def raw_post(port: int, path: str, headers: dict, size: int, chunked: bool,
             source: str = "127.0.0.7") -> tuple[int, dict, dict]:
    """POST ``size`` bytes of a JSON-looking body over a raw socket from ``source``, as fast as the server
    takes them; the sending stops when the server answers or closes. Returns (status, headers, JSON body)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30, source_address=(source, 0))
    head = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Content-Type: application/json",
            *(f"{k}: {v}" for k, v in headers.items())]
    head.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {size}")
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
    piece = b'{"x": "' + b"x" * (256 * 1024)
    stop = threading.Event()

    def send_body() -> None:
        sent = 0
        try:
            while sent < size and not stop.is_set():
                data = piece[: size - sent]
                sock.sendall(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
                sent += len(data)
            if chunked:
                sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server answered and closed: the rest is never read

    sender = threading.Thread(target=send_body, daemon=True)
    sender.start()
    received = b""
    try:
        while b"\r\n\r\n" not in received:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
        head_text, _, rest = received.partition(b"\r\n\r\n")
        lines = head_text.decode("latin-1").split("\r\n")
        answer_headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(answer_headers.get("content-length", "0"))
        while len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
        return int(lines[0].split()[1]), answer_headers, json.loads(rest[:length] or b"null")
    finally:
        stop.set()
        sock.close()
        sender.join(10)


BODY_ROUTES = ["/v1/chat/completions", "/v1/completions", "/web_retrieval", "/v1/conversations",
               "/v1/conversations/conv_nothing/chat", "/miner_availabilities/miner_availabilities",
               "/api_management/create-api-key/", "/dashboard/login"]


async def test_oversized_bodies_are_refused_on_every_route_and_the_worker_stays_small(net):
    key, _ = await new_key(net, "?credits=10")
    port = int(net.api_url.rsplit(":", 1)[1])
    pid = net.processes[net.api_names[0]].pid
    size = 200 * MIB

    def attack_all() -> list[tuple[str, str, int, dict]]:
        seen = []
        for path in BODY_ROUTES:
            for label, headers, chunked in (("declared, no key", {}, False), ("chunked, no key", {}, True),
                                            ("declared, a key", {"api-key": key}, False),
                                            ("chunked, a wrong key", {"api-key": "sk-sn-wrong"}, True)):
                status, answer_headers, body = raw_post(port, path, headers, size, chunked)
                seen.append((path, label, status, body))
                assert answer_headers.get("connection") == "close", (path, label, status)
        return seen

    await asyncio.to_thread(attack_all)  # warm-up: first calls of each path allocate their code's caches
    before = rss_kib(pid)
    seen = await asyncio.to_thread(attack_all)
    grown = rss_kib(pid) - before
    print(f"worker RSS before {before} KiB, grown {grown} KiB over {len(seen)} requests of 200 MiB")
    for path, label, status, body in seen:
        missing_admin_header = path.startswith("/api_management")  # none of these sends an admin-key header
        # 422: the subnet's status for a missing admin-key header
        allowed = (401, 403, 413, 429) + ((422,) if missing_admin_header else ())
        assert status in allowed, (path, label, status, body)  # 429: its wrong keys add up
        assert set(body["error"]) == {"message", "type", "code"}, (path, label, body)
        if label.startswith("declared"):
            assert status == 413 and body["error"]["code"] == "request_too_large", (path, label, status)
    # 32 requests that would have sent 6.4 GiB: the worker grew by less than a few MiB.
    assert grown < 4 * 1024, f"worker RSS grew by {grown} KiB"
    answer = await call("POST", net.api_url + "/v1/chat/completions", headers={"api-key": key},
                        json={"messages": MESSAGES, "max_tokens": 2})
    assert answer.status == 200, answer


async def test_a_chunked_body_with_a_good_key_is_read_only_to_the_route_limit(net):
    key, _ = await new_key(net, "?credits=10")
    port = int(net.api_url.rsplit(":", 1)[1])
    pid = net.processes[net.api_names[0]].pid
    for path in ("/web_retrieval", "/v1/conversations"):
        await asyncio.to_thread(raw_post, port, path, {"api-key": key}, 200 * MIB, True, "127.0.0.8")  # warm-up
    before = rss_kib(pid)
    for path, limit in (("/web_retrieval", 64 * 1024), ("/v1/conversations", MIB)):
        status, _, body = await asyncio.to_thread(raw_post, port, path, {"api-key": key}, 200 * MIB, True,
                                                  "127.0.0.8")
        assert status == 413 and body["error"]["code"] == "request_too_large", (path, body)
        assert str(limit) in body["error"]["message"]
    grown = rss_kib(pid) - before
    assert grown < 4 * 1024, f"worker RSS grew by {grown} KiB"
    assert await credits_left(net, key) == 10


async def test_a_conversation_message_is_bounded_and_nothing_is_stored(net):
    key, key_id = await new_key(net)
    answer = await call("POST", net.api_url + "/v1/conversations", headers={"api-key": key},
                        json={"messages": [{"role": "user", "content": "x" * 100_001}]})
    assert answer.status == 422 and answer.body["error"]["code"] == "message_too_long", answer
    made = await call("POST", net.api_url + "/v1/conversations", headers={"api-key": key},
                      json={"messages": [{"role": "user", "content": "x" * 1000}]})
    assert made.status == 200
    chat = await call("POST", net.api_url + f"/v1/conversations/{made.body['id']}/chat", headers={"api-key": key},
                      json={"messages": [{"role": "user", "content": "y" * 100_001}]})
    assert chat.status == 422 and chat.body["error"]["code"] == "message_too_long", chat
    stored = await call("GET", net.api_url + f"/v1/conversations/{made.body['id']}", headers={"api-key": key})
    assert len(stored.body["messages"]) == 1


async def test_creating_conversations_counts_against_the_rate_limit(net):
    key, _ = await new_key(net, "?credits=5&rate_limits=3%20per%20minute")
    seen = [await call("POST", net.api_urls[i % 2] + "/v1/conversations", headers={"api-key": key},
                       json={"messages": [{"role": "user", "content": "x" * 1000}]}) for i in range(4)]
    assert [a.status for a in seen] == [200, 200, 200, 429], seen
    assert await credits_left(net, key) == 5  # storing is not charged, only limited


# -- 4. brute force ----------------------------------------------------------------------------------------------

async def statuses(session: aiohttp.ClientSession, net, count: int, request) -> list[tuple[int, str]]:
    seen = []
    for i in range(count):
        method, path, headers = request(i)
        async with session.request(method, net.api_urls[i % 2] + path, headers=headers) as response:
            await response.read()
            seen.append((response.status, response.headers.get("Retry-After", "")))
    return seen


async def test_admin_key_guessing_is_throttled_across_workers(net):
    async with session_from("127.0.0.3") as session:
        seen = await statuses(session, net, 30, lambda i: ("GET", "/api_management/keys", {"admin-key": f"guess{i}"}))
        assert [s for s, _ in seen[:10]] == [403] * 10
        assert all(s == 429 and int(wait) >= 1 for s, wait in seen[10:]), seen
        # the right key from the throttled address waits too: guessing cannot go on at any speed
        right = await statuses(session, net, 2, lambda i: ("GET", "/api_management/keys", {"admin-key": net.admin_key}))
        assert [s for s, _ in right] == [429, 429]
    # another address is not held back
    assert (await admin(net, "GET", "/keys")).status == 200


async def test_api_key_guessing_is_throttled_across_workers(net):
    key, _ = await new_key(net)
    async with session_from("127.0.0.4") as session:
        seen = await statuses(session, net, 20, lambda i: ("GET", "/v1/models", {"api-key": f"sk-sn-guess{i}"}))
        assert [s for s, _ in seen[:10]] == [401] * 10
        assert all(s == 429 and int(wait) >= 1 for s, wait in seen[10:]), seen
    async with session_from("127.0.0.1") as session:
        ok = await statuses(session, net, 2, lambda i: ("GET", "/v1/models", {"api-key": key}))
        assert [s for s, _ in ok] == [200, 200]


async def test_a_spoofed_forwarded_for_from_an_untrusted_peer_does_not_reset_the_limit(net):
    async with session_from("127.0.0.5") as session:
        seen = await statuses(session, net, 15, lambda i: (
            "GET", "/v1/models", {"api-key": f"sk-sn-guess{i}", "X-Forwarded-For": f"10.1.0.{i}"}))
    assert [s for s, _ in seen[:10]] == [401] * 10 and {s for s, _ in seen[10:]} == {429}, seen


async def test_forwarded_for_from_a_trusted_proxy_is_honoured(net):
    async with session_from(PROXY) as session:
        # 15 clients behind the proxy, one wrong key each: none is over its own limit
        seen = await statuses(session, net, 15, lambda i: (
            "GET", "/v1/models", {"api-key": f"sk-sn-guess{i}", "X-Forwarded-For": f"6.6.6.6, 10.2.0.{i}"}))
        assert {s for s, _ in seen} == {401}, seen
        # one client behind the proxy guessing: its own limit, whatever it writes to the left
        seen = await statuses(session, net, 15, lambda i: (
            "GET", "/v1/models", {"api-key": f"sk-sn-guess{i}", "X-Forwarded-For": f"9.9.9.{i}, 10.3.0.1"}))
        assert [s for s, _ in seen[:10]] == [401] * 10 and {s for s, _ in seen[10:]} == {429}, seen


async def test_dashboard_login_limit_ignores_a_rotating_forwarded_for(net):
    async with session_from("127.0.0.1") as session:  # uvicorn itself believed X-Forwarded-For from 127.0.0.1
        seen = []
        for i in range(25):
            async with session.post(net.api_urls[i % 2] + "/dashboard/login", data={"admin_key": f"guess{i}"},
                                    headers={"X-Forwarded-For": f"10.4.0.{i}"}, allow_redirects=False) as response:
                seen.append(response.status)
    assert seen[:20] == [401] * 20 and set(seen[20:]) == {429}, seen


# -- 5. metering at the edges ------------------------------------------------------------------------------------

def leave_early(port: int, path: str, key: str, body: dict, after: float = 0.3) -> None:
    """Send a whole request, then go away before the answer starts."""
    data = json.dumps(body).encode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\napi-key: {key}\r\n"
                 f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
    sock.settimeout(after)
    with pytest.raises(socket.timeout):
        sock.recv(1)  # nothing yet: the slow miner takes 1.5 s to start
    sock.close()


@pytest.mark.parametrize("path,body", [
    ("/v1/chat/completions", {"messages": MESSAGES, "max_tokens": 2}),
    ("/v1/chat/completions", {"messages": MESSAGES, "max_tokens": 2, "stream": True}),
    ("/v1/completions", {"prompt": "hi", "max_tokens": 2}),
    ("/v1/completions", {"prompt": "hi", "max_tokens": 2, "stream": True}),
], ids=["chat", "chat-stream", "completions", "completions-stream"])
async def test_a_client_gone_before_the_first_byte_is_not_charged(net, path, body):
    key, key_id = await new_key(net, "?credits=5")
    slow = net.member("miner", "slow").uid
    port = int(net.api_url.rsplit(":", 1)[1])
    await asyncio.to_thread(leave_early, port, path, key, {**body, "uids": [slow]})
    log = (await eventually(lambda: logs_of(net, key_id), timeout=10))[0]
    assert log["outcome"] == "client_closed" and log["charged"] == 0, log
    assert await eventually(lambda: _credits_are(net, key, 5), timeout=3)


async def _credits_are(net, key: str, expected: int) -> bool:
    return await credits_left(net, key) == expected
