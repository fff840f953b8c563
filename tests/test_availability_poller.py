"""The validator's availability poller over real HTTP: one missed poll is forgiven, two are not."""

from __future__ import annotations

import bittensor as bt
from aiohttp import web

from shared.auth import Signer
from shared.chain import Neuron
from shared.signed_http import SignedClient
from validator.availability import AvailabilityPoller

ANSWER = {"task_availabilities": {"InferenceTask": True}, "llm_model_availabilities": {"m": True}}


async def serve(availability) -> tuple[web.AppRunner, int]:
    """A miner's ``/availability`` on 127.0.0.1 (``availability``: the aiohttp handler); the caller cleans up."""
    app = web.Application()
    app.router.add_get("/availability", availability)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]


async def test_a_miner_becomes_unavailable_after_two_missed_polls():
    answering = {"ok": True}

    async def availability(request: web.Request) -> web.Response:
        return web.json_response(ANSWER) if answering["ok"] else web.json_response({"error": "busy"}, status=503)

    runner, port = await serve(availability)
    keypair = bt.sp_core.Keypair.create_from_uri("//Alice")
    client = SignedClient(Signer(keypair))
    neuron = Neuron(1, keypair.ss58_address, "", 1.0, 0.0, False, f"127.0.0.1:{port}")
    poller = AvailabilityPoller(client, timeout=2.0)
    try:
        assert (await poller.poll_one(neuron)).availability.serves("InferenceTask", "m")
        answering["ok"] = False
        forgiven = await poller.poll_one(neuron)
        assert forgiven.availability is not None and forgiven.misses == 1
        assert (await poller.poll_one(neuron)).availability is None
        answering["ok"] = True
        assert (await poller.poll_one(neuron)).availability is not None
        other = Neuron(1, bt.sp_core.Keypair.create_from_uri("//Bob").ss58_address, "", 1.0, 0.0, False, None)
        assert poller.get(other) is None  # a new hotkey at the uid starts unknown
    finally:
        await client.close()
        await runner.cleanup()


async def test_an_availability_answer_past_the_cap_is_no_availability():
    """A miner answering with megabytes (valid JSON, padded) is read no further than ``MAX_AVAILABILITY_BYTES``
    and counts as unknown: the validator's memory is not the miner's to fill."""
    padded = {**ANSWER, "padding": "x" * (2 * 1024 * 1024)}

    async def availability(request: web.Request) -> web.Response:
        return web.json_response(padded if request.query.get("big") != "no" else ANSWER)

    runner, port = await serve(availability)
    keypair = bt.sp_core.Keypair.create_from_uri("//Alice")
    client = SignedClient(Signer(keypair))
    poller = AvailabilityPoller(client, timeout=2.0)
    try:
        big = await poller.poll_one(Neuron(1, keypair.ss58_address, "", 1.0, 0.0, False, f"127.0.0.1:{port}"))
        assert big.availability is None
        padded["padding"] = "x" * 1000  # the same miner, a reasonable answer: known again
        small = await poller.poll_one(Neuron(1, keypair.ss58_address, "", 1.0, 0.0, False, f"127.0.0.1:{port}"))
        assert small.availability is not None and small.availability.serves("InferenceTask", "m")
    finally:
        await client.close()
        await runner.cleanup()
