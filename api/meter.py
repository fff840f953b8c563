"""Metering: what each public request used, settled once its response is over.

    MeterMiddleware(app)              # every HTTP request gets a ``Meter`` in ``request.state.meter``
    admission (access.Admit)          # fills in the key, the rate-limit headers, the credits it reserved
    route (the chat core)             # task, strategy; each round of miners (``query``), who won (``won_by``)
    meter.answered() | miner_failed() | client_left()     # how the answer went, told by whoever saw it
    middleware, after the last byte   # ``settle``: X-RateLimit-*, refund if not charged; then, from the
                                      # worker's backlog (``api.backlog``), rounds forwarded and the record

A request is recorded when both its response is over (sent, failed or the
client went away) and every miner it queried has finished, whichever comes
last: one ``RequestLog`` with one ``MinerLog`` per miner, submitted to the
``Recorder`` (no I/O on the request path). A streamed answer cut off by the
client is charged and metered with what the miner had sent until then.

Credits are reserved at admission and refunded here unless the route charged
them (a miner answered): a bad body, a refused task, no miner available or
every miner failing costs nothing.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Optional, Union

from loguru import logger

from shared.request_ids import new_id
from shared.schemas import MinerChatRequest, MinerResponse, key_id

from .keys import KeyRecord
from .miner_call import MinerCall
from .responses import completion_tokens_of, usage_of
from .store import MinerLog, RequestLog

if TYPE_CHECKING:
    from .gateway import Gateway

REJECTED = {400, 401, 402, 403, 404, 405, 409, 413, 422, 429}


class Meter:
    def __init__(self, path: str):
        self.path = path
        self.created_at = time.time()
        self.started = time.perf_counter()
        self.request_id: Optional[str] = None  # the route's id (chatcmpl-…); a req-… one is made if it sets none
        self.key: Optional[KeyRecord] = None
        self.headers: list[tuple[bytes, bytes]] = []  # X-RateLimit-*, added to the response
        self.cost = 0  # credits this request costs when charged
        self.reserved = 0  # credits taken from a finite balance at admission
        self.charge = False  # a miner answered: keep the credits
        self.task: Optional[str] = None
        self.strategy: Optional[str] = None
        self.model: Optional[str] = None
        self.stream = False
        self.prompt_tokens = 0
        self.winner: Optional[MinerCall] = None  # the call whose answer the client got (its uid is logged)
        self.winners: list[Any] = []  # every call whose answer reached the client (reasoning steps, prompts)
        self.rounds: list[list[Any]] = []  # every miner queried, by round: MinerCall or MinerResponse
        self.running = 0  # rounds whose miners have not all finished yet
        self.outcome: Optional[str] = None
        self.error: Optional[str] = None
        self.status: Optional[int] = None
        self.first_byte: Optional[float] = None
        self.body_done = False  # the response's last byte was sent
        self.unread = False  # the client had left before the answer's first byte: not charged
        self.finished: Optional[float] = None
        self.recorded = False
        self.logged = True  # False for free routes (account queries): no request log, no usage
        self.parts = 1  # chat requests this request is made of (/v1/completions with a list of prompts)
        self.units = 1  # units of miner work admitted (see api.admission)
        self.admission = None  # the admission of its units, shared by its parts
        self.unforwarded: list[tuple] = []  # rounds to forward when the response is over (see ``query``)

    def describe(self, *, task: Optional[str] = None, strategy: Optional[str] = None, model: Optional[str] = None,
                 stream: bool = False, prompt_tokens: int = 0) -> None:
        self.task, self.strategy, self.model, self.stream, self.prompt_tokens = (
            task, strategy, model, stream, prompt_tokens)

    def queried(self, responses: list) -> None:
        """A round whose miners have all finished already (web retrieval's ``MinerResponse``s)."""
        self.rounds.append(responses)

    # -- transitions: admitted → answered | miner_failed | client_left → settled (``settle``) ------------

    def answered(self) -> None:
        """A miner's answer reached the client whole: the request keeps its credits."""
        self.charge = True

    def miner_failed(self, error: str) -> None:
        """The answering miner broke after the first byte (told in-band): not charged."""
        self.outcome, self.error = "miner_error", error

    def client_left(self, why: Optional[str] = None) -> None:
        """The client went away part-way through the answer, or was let go (``why``: e.g. it read a stream too
        slowly for its buffer, ``api.miner_call.Relay``): it had what it read, and is charged for it."""
        if self.outcome is None:
            self.outcome, self.charge = "client_closed", True
            self.error = why or self.error

    # -- who was asked, and who answered --------------------------------------------------------------

    def won_by(self, call: Any) -> None:
        """``call`` answers the client; the first such call is the request's miner in the log."""
        self.winners.append(call)
        if self.winner is None:
            self.winner = call

    def contributed(self, call: Any) -> None:
        """``call``'s answer reached the client as part of the answer (a reasoning step)."""
        self.winners.append(call)

    @property
    def calls(self) -> list[Any]:
        """Every miner queried so far, in the order asked."""
        return [call for calls in self.rounds for call in calls]

    def won(self, call: Any) -> bool:
        return any(call is winner for winner in self.winners)

    @property
    def ready(self) -> bool:
        return self.finished is not None and self.running <= 0 and not self.recorded

    def usage(self) -> dict:
        calls = [c for c in self.winners if isinstance(c, MinerCall)]
        if len(calls) == 1:
            return usage_of(calls[0], self.prompt_tokens)
        if not calls:
            return {}
        return {"prompt_tokens": self.prompt_tokens,
                "completion_tokens": sum(usage_of(c, 0)["completion_tokens"] for c in calls)}

    def to_log(self) -> RequestLog:
        usage = self.usage()
        latency = ((self.finished or time.perf_counter()) - self.started) * 1000
        return RequestLog(
            request_id=self.request_id or new_id("req"), key_id=self.key.id,
            created_at=self.created_at, path=self.path,
            status=self.status or 500, outcome=self.outcome or "error", latency_ms=round(latency, 3),
            task=self.task, strategy=self.strategy, model=self.model, stream=self.stream,
            error=(self.error or None) and self.error[:500],
            first_byte_ms=None if self.first_byte is None else round((self.first_byte - self.started) * 1000, 3),
            prompt_tokens=usage.get("prompt_tokens", 0), completion_tokens=usage.get("completion_tokens", 0),
            charged=self.cost if self.charge else 0,
            miner_uid=self.winner.miner.uid if self.winner else None,
            miner_hotkey=self.winner.miner.hotkey if self.winner else None,
            miners=[miner_log(call, self.won(call)) for call in self.calls],
        )


def miner_log(call: Union[MinerCall, MinerResponse], winner: bool) -> MinerLog:
    if isinstance(call, MinerResponse):  # web retrieval: one whole answer, no stream
        return MinerLog(uid=call.uid, hotkey=call.hotkey, outcome=call.status,
                        error=(call.error or None) and call.error[:300],
                        latency_ms=round(call.timings[-1] * 1000, 3) if call.timings else None,
                        first_chunk_ms=round(call.timings[0] * 1000, 3) if call.timings else None,
                        completion_tokens=call.completion_tokens, winner=winner)
    record = call.record
    tokens = completion_tokens_of(call)  # the miner's count only where it can be true
    return MinerLog(uid=call.miner.uid, hotkey=call.miner.hotkey, outcome=call.status,
                    error=(call.error or None) and call.error[:300],
                    latency_ms=None if call.elapsed is None else round(call.elapsed * 1000, 3),
                    first_chunk_ms=round(record.timings[0] * 1000, 3) if record.timings else None,
                    completion_tokens=tokens, winner=winner)


def meter_of(request: Any) -> Meter:
    """The request's meter (a fresh one if the middleware is not installed, e.g. in a bare test app)."""
    state = request.scope.setdefault("state", {})
    meter = state.get("meter")
    if meter is None:
        meter = state["meter"] = Meter(request.url.path)
    return meter


def record_if_ready(meter: Meter, gateway: Gateway) -> None:
    if meter.key is None or not meter.logged or not meter.ready:
        return
    meter.recorded = True
    gateway.unrecorded.discard(meter)
    log = meter.to_log()
    gateway.recorder.submit(log)
    gateway.metrics.observe_log(log)


def query(gateway: Gateway, meter: Meter, calls: list[MinerCall], request_id: str, request: MinerChatRequest, *,
          with_key: bool = False) -> None:
    """A round of miner calls starts (``calls`` may still grow as the round replaces failures).

    Its miners go in the request's log. Once the response is over (``settle``; at once, if it is over
    already), the forwarder queues their answers for the validator as one item under ``request_id``
    (with the key's id when ``with_key``: the race that answered the client) as soon as the last of
    them has ended; then the round is over for the log too (``miners_finished``). Building the item and
    the log waits for the response: it is work the client need not wait for.
    """
    meter.rounds.append(calls)
    meter.running += 1
    meter.unforwarded.append((calls, request_id, request, with_key))
    if meter.finished is not None:
        forward_rounds(meter, gateway)


def forward_rounds(meter: Meter, gateway: Gateway) -> None:
    rounds, meter.unforwarded = meter.unforwarded, []
    for calls, request_id, request, with_key in rounds:
        gateway.forwarder.submit_when_done(
            calls, request_id, request, key_id=key_id(meter.key.id) if with_key and meter.key else None,
            then=lambda: miners_finished(meter, gateway))


def miners_finished(meter: Meter, gateway: Gateway) -> None:
    """Called once every miner of one round (``query``) has finished and was forwarded."""
    meter.running -= 1
    record_if_ready(meter, gateway)


def record_unfinished(gateway: Gateway) -> None:
    """At shutdown: record what is left, as it is, rather than lose it."""
    for meter in list(gateway.unrecorded):
        meter.running = 0
        record_if_ready(meter, gateway)


async def refund(gateway: Gateway, key_id: str, amount: int) -> None:
    try:
        await gateway.store.refund(key_id, amount)
    except Exception as exc:
        logger.error("credit refund of {} failed for a key: {}", amount, type(exc).__name__)


def settle(meter: Meter, gateway: Gateway) -> None:
    meter.finished = time.perf_counter()
    status = meter.status = meter.status or 500
    if meter.unread:
        meter.charge = False  # whatever the route decided since: nobody read a byte
    if meter.outcome is None:
        if status < 400:
            meter.outcome = "ok" if meter.body_done else "client_closed"
        else:
            meter.outcome = "rejected" if status in REJECTED else "error"
    if meter.reserved and not meter.charge:
        gateway.keep(refund(gateway, meter.key.id, meter.reserved))
    if meter.logged:
        gateway.unrecorded.add(meter)
    gateway.backlog.add(keep_books, meter, gateway)


def keep_books(meter: Meter, gateway: Gateway) -> None:
    """A settled request's rounds go to the forwarder and, once its miners have finished, its log is
    recorded: work the next request need not wait for, so ``settle`` leaves it to ``gateway.backlog``."""
    forward_rounds(meter, gateway)
    if meter.logged:
        record_if_ready(meter, gateway)


def gone_already(receive: Any) -> bool:
    """Whether the server has already told that the client went away, without waiting for anything.

    The body was read before the answer started, so the next message can only be ``http.disconnect``;
    ``receive`` is run up to its first wait and, if it has to wait, closed (no task, no timer).
    """
    step = receive()
    try:
        step.send(None)
    except StopIteration as done:
        return (done.value or {}).get("type") == "http.disconnect"
    except Exception:
        return False
    step.close()  # it would have waited: the client is still there
    return False


def left_before_first_byte(meter: Meter) -> None:
    """Nobody will read this answer: it is not charged, and its log says so."""
    meter.outcome, meter.charge, meter.unread = "client_closed", False, True
    meter.error = meter.error or "the client left before the first byte of the answer"


def metered(meter: Meter, send: Any, receive: Any = None, gateway: Optional[Gateway] = None) -> Any:
    """``send``, noting on the meter the status, when the first byte left and whether the body ended,
    and adding the meter's X-RateLimit-* headers to the response. With ``receive``: an answer that
    starts after its admitted client has gone is not charged (see ``left_before_first_byte``). With
    ``gateway``: an error answer gives its reserved credits back before it leaves, so a client that
    reads its balance right after the error sees them (errors are rare; answers refund after)."""

    async def metered_send(message: dict) -> None:
        if message["type"] == "http.response.start":
            if (receive is not None and meter.key is not None and message["status"] < 400
                    and meter.first_byte is None and gone_already(receive)):
                left_before_first_byte(meter)
            if gateway is not None and message["status"] >= 400 and meter.reserved and not meter.charge:
                reserved, meter.reserved = meter.reserved, 0
                await refund(gateway, meter.key.id, reserved)
            meter.status = message["status"]
            meter.first_byte = time.perf_counter()
            if meter.headers:
                message = {**message, "headers": [*message.get("headers", ()), *meter.headers]}
        elif message["type"] == "http.response.body" and not message.get("more_body", False):
            meter.body_done = True
        await send(message)

    return metered_send


class MeterMiddleware:
    """Pure ASGI, so streamed responses pass through untouched and are settled after their last byte."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        meter = Meter(scope["path"])
        scope.setdefault("state", {})["meter"] = meter
        try:
            await self.app(scope, receive, metered(meter, send, receive, scope["app"].state.gateway))
        finally:
            if meter.key is not None:
                settle(meter, scope["app"].state.gateway)
