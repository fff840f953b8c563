"""Check an answer from a real model against a reference model's next-token choices.

The builtin generator can be re-derived exactly; a real model (what an
``upstream`` miner serves) cannot, but it can be checked the way the subnet
checks it: at sampled positions of the answer, ask a reference copy of the
model what it would say next, given the same conversation and the answer so
far, and see whether the miner's next token is among its ``top_k`` choices::

    reference = ReferenceModel("http://127.0.0.1:8000/v1", models={"Qwen/Qwen2.5-7B-Instruct"})
    reference.agreement(messages, "Qwen/Qwen2.5-7B-Instruct", answer)   # 0..1, share of positions that agree

About a tenth of the word boundaries are sampled (``share``), always including
the last, and the choice of positions is a function of the answer, so a
verdict can be reproduced. The reference is any OpenAI-compatible server that
returns ``top_logprobs`` and continues a final assistant message
(``continue_final_message``, as vLLM does). It runs in the scorer's worker
thread, so plain blocking HTTP is used.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import urllib.error
import urllib.request
from typing import Any, Iterable

_WORD = re.compile(r"\S+")


class ReferenceUnavailable(Exception):
    """The reference server did not answer usefully: no verdict, rather than a wrong one."""


def sample_positions(text: str, share: float) -> list[int]:
    """Offsets of word starts to check: about ``share`` of them, the last always included."""
    starts = [m.start() for m in _WORD.finditer(text)]
    if not starts:
        return []
    rng = random.Random(hashlib.sha256(text.encode()).digest())
    count = max(1, round(share * len(starts)))
    chosen = set(rng.sample(starts[:-1], min(count - 1, len(starts) - 1))) | {starts[-1]}
    return sorted(chosen)


def continues_with(rest: str, tokens: Iterable[str]) -> bool:
    """Whether ``rest`` (the answer from this position on) begins with one of the reference's tokens."""
    bare = rest.lstrip()
    for token in tokens:
        if token and (rest.startswith(token) or (token.strip() and bare.startswith(token.strip()))):
            return True
    return False


class ReferenceModel:
    def __init__(self, url: str, *, models: Iterable[str], api_key: str = "", top_k: int = 20,
                 share: float = 0.1, timeout: float = 10.0):
        self.url = url.rstrip("/")
        self.models = frozenset(models)
        self.api_key = api_key
        self.top_k = top_k
        self.share = share
        self.timeout = timeout

    def serves(self, model: str) -> bool:
        return model in self.models

    def next_tokens(self, messages: list[dict[str, Any]], model: str, prefix: str) -> list[str]:
        """The reference's ``top_k`` next tokens after ``prefix`` of the assistant's reply."""
        body = {
            "model": model,
            "messages": [*messages, {"role": "assistant", "content": prefix}],
            "max_tokens": 1, "temperature": 0.0, "logprobs": True, "top_logprobs": self.top_k,
            "continue_final_message": True, "add_generation_prompt": False,
        }
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url + "/chat/completions", data=json.dumps(body).encode(),
                                         headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                answer = json.loads(response.read())
            first = answer["choices"][0]["logprobs"]["content"][0]
            return [entry["token"] for entry in first["top_logprobs"]] or [first["token"]]
        except (OSError, urllib.error.URLError, ValueError, KeyError, IndexError, TypeError) as exc:
            raise ReferenceUnavailable(f"reference model did not answer: {type(exc).__name__}: {exc}") from None

    def agreement(self, messages: list[dict[str, Any]], model: str, text: str) -> float:
        """Share of the sampled positions where the answer continues with one of the reference's choices."""
        positions = sample_positions(text, self.share)
        if not positions:
            return 0.0
        hits = 0
        for position in positions:
            prefix = text[:position].rstrip()
            hits += continues_with(text[len(prefix):], self.next_tokens(messages, model, prefix))
        return hits / len(positions)
