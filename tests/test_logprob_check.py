"""Answers from real models, checked against a reference model over real HTTP.

A small deterministic "model" server stands in for vLLM: for a context it ranks
a vocabulary (a different ranking per model name), generates greedily, and
answers ``continue_final_message`` requests with its ``top_logprobs``. An
honest miner's answer comes from the same model as the reference; a cheap one
from another model.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import threading
import time
import urllib.request

import pytest
from aiohttp import web

from shared.schemas import MinerChatRequest, MinerResponse, ScoringItem
from validator.logprob_check import ReferenceModel, ReferenceUnavailable, continues_with, sample_positions
from validator.rewards import reward_item

VOCABULARY = ("stake weights miners validators subnet emission answer model token reply chain block reward "
              "score speed quality network agree signal honest value time data request server answer").split()
PROMPT = [{"role": "user", "content": "How do validators rate miners?"}]


def ranking(model: str, context: list[str]) -> list[str]:
    tail = " ".join(context[-2:])
    return sorted(dict.fromkeys(VOCABULARY), key=lambda w: hashlib.sha256(f"{model}|{tail}|{w}".encode()).digest())


def words_of(messages: list[dict]) -> list[str]:
    return " ".join(str(m.get("content", "")) for m in messages).lower().split()


async def chat(request: web.Request) -> web.Response:
    body = await request.json()
    model, messages = body["model"], body["messages"]
    if body.get("continue_final_message"):
        prefix = messages[-1]["content"]
        ranked = ranking(model, words_of(messages[:-1]) + prefix.split())[: body.get("top_logprobs", 5)]
        space = " " if prefix else ""
        top = [{"token": space + word, "logprob": -float(i)} for i, word in enumerate(ranked)]
        return web.json_response({"choices": [{"index": 0, "message": {"role": "assistant", "content": top[0]["token"]},
                                               "logprobs": {"content": [{**top[0], "top_logprobs": top}]}}]})
    context, answer = words_of(messages), []
    for _ in range(body.get("max_tokens", 30)):
        word = ranking(model, context + answer)[0]
        answer.append(word)
    return web.json_response({"choices": [{"index": 0, "message": {"role": "assistant", "content": " ".join(answer)},
                                           "finish_reason": "length"}], "model": model})


@pytest.fixture(scope="module")
def model_server():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app)
    listening = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
        listening.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert listening.wait(10), "the model server did not start"
    yield f"http://127.0.0.1:{port}/v1"
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


def generate(url: str, model: str, tokens: int = 30) -> str:
    body = json.dumps({"model": model, "messages": PROMPT, "max_tokens": tokens}).encode()
    request = urllib.request.Request(url + "/chat/completions", method="POST", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())["choices"][0]["message"]["content"]


def test_positions_are_reproducible_and_include_the_last_word():
    text = " ".join(f"w{i}" for i in range(50))
    positions = sample_positions(text, 0.1)
    assert positions == sample_positions(text, 0.1) and len(positions) == 5
    assert positions[-1] == text.rindex("w49")
    assert continues_with(" stake weights", [" stake"]) and not continues_with(" stake", [" miners", " chain"])


def test_the_reference_agrees_with_its_own_model_and_not_with_another(model_server):
    reference = ReferenceModel(model_server, models={"real-model"}, top_k=3, share=0.3)
    honest = generate(model_server, "real-model")
    cheap = generate(model_server, "cheap-model")
    assert honest != cheap
    assert reference.agreement(PROMPT, "real-model", honest) == 1.0
    assert reference.agreement(PROMPT, "real-model", cheap) < 0.5


def item_with(responses: list[MinerResponse]) -> ScoringItem:
    request = MinerChatRequest(messages=PROMPT, model="real-model", task="InferenceTask", seed=3)
    return ScoringItem(request_id="r", created_at=time.time(), task="InferenceTask", request=request,
                       responses=responses)


def answer(uid: int, text: str, status: str = "ok") -> MinerResponse:
    return MinerResponse(uid=uid, hotkey=f"hk{uid}", status=status, chunks=[text] if text else [], timings=[0.2],
                         model="real-model")


def test_rewards_from_the_reference(model_server):
    reference = ReferenceModel(model_server, models={"real-model"}, top_k=3, share=0.3)
    honest, cheap = generate(model_server, "real-model"), generate(model_server, "cheap-model")
    rewards = reward_item(item_with([answer(1, honest), answer(2, honest), answer(3, cheap), answer(4, "", "error")]),
                          timeout=10.0, copycat_penalty=2.0, reference=reference)
    assert rewards[1] == rewards[2] == pytest.approx(0.99)  # the same model and seed may agree: not copy-cats
    assert rewards[3] < 0.5 * rewards[1]
    assert rewards[4] == 0.0


def test_no_verdict_when_the_reference_is_down():
    reference = ReferenceModel("http://127.0.0.1:9/v1", models={"real-model"}, timeout=1.0)
    with pytest.raises(ReferenceUnavailable):
        reference.next_tokens(PROMPT, "real-model", "")
    assert reward_item(item_with([answer(1, "stake weights")]), timeout=10.0, copycat_penalty=2.0,
                       reference=reference) == {}
    unknown = ReferenceModel("http://127.0.0.1:9/v1", models={"other-model"})
    assert reward_item(item_with([answer(1, "stake weights")]), timeout=10.0, copycat_penalty=2.0,
                       reference=unknown) == {}
