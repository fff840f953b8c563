"""A tiny language model with real log-probabilities, served like vLLM, for tests of the reference check.

It is a proper probability model, only a very small one: for a context (the
model's name, the last user message, the last two words) it puts hashed
logits on a fixed vocabulary of words plus ``<eos>`` and ``<unk>``, and a
softmax turns them into a distribution that sums to 1. So the log-probability
and rank it reports for any token are exactly those of the distribution it
samples from: the same numbers a real server reports for a real model.

    POST /v1/chat/completions
      {"messages", "max_tokens", "temperature", "seed"}            → an answer, sampled (greedy at temperature 0)
      {..., "continue_final_message": true, "prompt_logprobs": k}  → vLLM's ``prompt_logprobs`` for every token
                                                                     of the conversation, the last message included

Prompts longer than ``CONTEXT`` tokens get a 400 (as vLLM does), unknown
models a 404.
"""

from __future__ import annotations

import hashlib
import math
import random
import re

from aiohttp import web

WORDS = ("stake weights miners validators subnet emission answer model token reply chain block reward score speed "
         "quality network agree signal honest value time data request server").split()
VOCABULARY = [" " + w for w in WORDS] + WORDS + ["<eos>", "<unk>"]
EOS, UNK = len(VOCABULARY) - 2, len(VOCABULARY) - 1
CONTEXT = 400
MODELS = ("real-model", "cheap-model")
_TOKEN = re.compile(r"\s*\S+")


def tokenize(text: str) -> list[str]:
    return _TOKEN.findall(text)


def token_id(token: str) -> int:
    return VOCABULARY.index(token) if token in VOCABULARY else UNK


def distribution(model: str, prompt: str, answer: list[str]) -> list[float]:
    """Log-probabilities over the vocabulary for the next answer token."""
    tail = "".join(answer[-2:])
    logits = []
    for index, token in enumerate(VOCABULARY):
        digest = hashlib.sha256(f"{model}|{prompt}|{tail}|{token}".encode()).digest()
        logit = 6.0 * int.from_bytes(digest[:4], "big") / 2**32
        if index < len(WORDS):
            logit -= 0.0 if answer else 12.0  # a leading space only after the first word
        elif index < 2 * len(WORDS):
            logit -= 12.0 if answer else 0.0
        elif index == EOS:
            logit = len(answer) - 14.0  # answers end after a dozen words or so
        else:
            logit = -4.0
        logits.append(logit)
    top = max(logits)
    norm = top + math.log(sum(math.exp(x - top) for x in logits))
    return [x - norm for x in logits]


def last_user(messages: list[dict]) -> str:
    return next((str(m.get("content", "")) for m in reversed(messages) if m.get("role") == "user"), "")


def generate(model: str, messages: list[dict], max_tokens: int, temperature: float, seed: int) -> tuple[list[str], str]:
    rng = random.Random(seed)
    prompt, answer = last_user(messages), []
    while len(answer) < max_tokens:
        logprobs = distribution(model, prompt, answer)
        if temperature <= 0:
            choice = max(range(len(logprobs)), key=logprobs.__getitem__)
        else:
            weights = [math.exp(lp / temperature) for lp in logprobs]
            choice = rng.choices(range(len(logprobs)), weights)[0]
        if choice == EOS:
            return answer, "stop"
        answer.append(VOCABULARY[choice])
    return answer, "length"


def prompt_logprobs(model: str, messages: list[dict], k: int) -> list:
    """vLLM's shape: None for the first prompt token, then {token_id: {logprob, rank, decoded_token}} per token."""
    *context, last = messages
    template = [tok for m in context for tok in ["<|" + str(m.get("role")) + "|>", *tokenize(str(m.get("content")))]]
    template.append("<|assistant|>")
    answer = tokenize(str(last.get("content", "")))
    prompt = last_user(context)
    entries: list = [None] + [{str(UNK): {"logprob": -4.0, "rank": 1, "decoded_token": tok}} for tok in template[1:]]
    for position, token in enumerate(answer):
        logprobs = distribution(model, prompt, answer[:position])
        order = sorted(range(len(logprobs)), key=lambda i: -logprobs[i])
        ranks = {i: r + 1 for r, i in enumerate(order)}
        own = token_id(token)
        entry = {str(i): {"logprob": logprobs[i], "rank": ranks[i], "decoded_token": VOCABULARY[i]} for i in order[:k]}
        entry[str(own)] = {"logprob": logprobs[own], "rank": ranks[own],
                           "decoded_token": token if own == UNK else VOCABULARY[own]}
        entries.append(entry)
    return entries


async def chat(request: web.Request) -> web.Response:
    body = await request.json()
    model, messages = body.get("model"), body["messages"]
    if model not in MODELS:
        return web.json_response({"error": {"message": f"model {model!r} does not exist"}}, status=404)
    length = sum(len(tokenize(str(m.get("content", "")))) + 1 for m in messages)
    if length > CONTEXT:
        return web.json_response({"error": {"message": "longer than the model's context"}}, status=400)
    if body.get("continue_final_message"):
        entries = prompt_logprobs(model, messages, int(body.get("prompt_logprobs") or 1))
        return web.json_response({"choices": [{"index": 0, "message": {"role": "assistant", "content": ""},
                                               "finish_reason": "length"}],
                                  "prompt_logprobs": entries, "usage": {"prompt_tokens": len(entries),
                                                                        "completion_tokens": 1}})
    tokens, finish = generate(model, messages, int(body.get("max_tokens", 64)), float(body.get("temperature", 1.0)),
                              int(body.get("seed", 0)))
    message = {"role": "assistant", "content": "".join(tokens)}
    return web.json_response({"model": model, "choices": [{"index": 0, "finish_reason": finish, "message": message}],
                              "usage": {"prompt_tokens": length, "completion_tokens": len(tokens)}})


def create_app() -> web.Application:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    return app
