"""Check an answer from a real model by scoring the whole answer under a reference copy of that model.

The builtin generator can be re-derived exactly; a real model (what an
``upstream`` miner serves) cannot, but every token of an answer can be scored
under the same model. One request to an OpenAI-compatible server that returns
*prompt* log-probabilities (vLLM's ``prompt_logprobs``) gives, for each token
of the conversation with the miner's answer appended as the assistant's
message, its rank among the reference's choices::

    reference = ReferenceModel("http://127.0.0.1:8000/v1", models={"Qwen/Qwen2.5-7B-Instruct"}, secret=b"…")
    reference.quality(messages, model, answer, max_new_tokens=256, salt="request-id/uid")   # 0..1

- Positions: a ``share`` of the answer's tokens, drawn with an HMAC of the
  validator's ``secret`` and ``salt`` (the item and the miner). A miner cannot
  tell which tokens are checked, so every token must be the model's. With
  ``share`` 1 every token is checked.
- A checked token agrees when the reference ranks it within its ``top_k``.
- Completeness: the answer's token count against the reference's own greedy
  answer to the same request (one generation, remembered per request), so an
  answer cut short earns in proportion: ``agreement × min(1, n / n_reference)``.
- ``max_new_tokens`` is enforced: an answer with more tokens earns 0.
- An answer the reference cannot read earns 0 (``Unreadable``: the server
  refuses it with a 4xx, e.g. too long for its context or a model it does not
  serve; or its tokens do not spell the answer). Only the validator's own
  failures — the reference down, a 5xx, a timeout — give no verdict
  (``ReferenceUnavailable``).

The server must accept ``continue_final_message`` / ``add_generation_prompt``
and ``prompt_logprobs`` on ``/chat/completions`` (vLLM does), answering a
``prompt_logprobs`` list with, per prompt token, ``{token_id: {"logprob",
"rank", "decoded_token"}}`` that includes the prompt's own token. It runs in
the scorer's worker thread, so plain blocking HTTP is used.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import urllib.error
import urllib.request
from collections import OrderedDict
from typing import Any, Iterable, Optional


class ReferenceUnavailable(Exception):
    """The reference server did not answer usefully (down, 5xx, timeout): no verdict, rather than a wrong one."""


class Unreadable(Exception):
    """The reference cannot read this answer (refused it, or its tokens do not spell it): the answer earns 0."""


def checked_positions(count: int, share: float, secret: bytes, salt: str) -> list[int]:
    """Which of ``count`` answer tokens to check: ``share`` of them, chosen by an HMAC nobody else can compute."""
    if count <= 0:
        return []
    wanted = min(count, max(1, round(share * count)))
    seed = hmac.new(secret, salt.encode(), hashlib.sha256).digest()
    return sorted(random.Random(seed).sample(range(count), wanted))


def answer_ranks(prompt_logprobs: list[Any], answer: str) -> list[int]:
    """The reference's rank of each answer token, first token first.

    The answer is the end of the prompt: walking back from the last position,
    each position's own token is the candidate whose text ends what is left of
    the answer (the longest, when several do). Raises ``Unreadable`` when the
    tokens do not spell the answer.
    """
    left = answer
    ranks: list[int] = []
    for entry in reversed(prompt_logprobs):
        if not left:
            break
        if not isinstance(entry, dict):
            raise Unreadable("the reference's tokens do not spell the answer")
        best: Optional[tuple[int, int]] = None  # (length, rank)
        for candidate in entry.values():
            text = candidate.get("decoded_token") or ""
            if text and left.endswith(text) and (best is None or len(text) > best[0]):
                best = (len(text), int(candidate.get("rank") or 1))
        if best is None:
            raise Unreadable("the reference's tokens do not spell the answer")
        left = left[: -best[0]]
        ranks.append(best[1])
    if left.strip():
        raise Unreadable("the answer is longer than what the reference read")
    return ranks[::-1]


class ReferenceModel:
    def __init__(self, url: str, *, models: Iterable[str], api_key: str = "", top_k: int = 20,
                 share: float = 1.0, secret: bytes = b"", timeout: float = 10.0, remember: int = 1024):
        self.url = url.rstrip("/")
        self.models = frozenset(models)
        self.api_key = api_key
        self.top_k = top_k
        self.share = share
        self.secret = secret
        self.timeout = timeout
        self.lengths: OrderedDict[str, int] = OrderedDict()  # the reference's own answer length per request
        self.remember = remember

    def serves(self, model: str) -> bool:
        return model in self.models

    def post(self, body: dict) -> dict:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url + "/chat/completions", data=json.dumps(body).encode(),
                                         headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            if 400 <= exc.code < 500:
                raise Unreadable(f"the reference refused the answer: HTTP {exc.code}") from None
            raise ReferenceUnavailable(f"reference model failed: HTTP {exc.code}") from None
        except (OSError, urllib.error.URLError, ValueError) as exc:
            raise ReferenceUnavailable(f"reference model did not answer: {type(exc).__name__}: {exc}") from None

    def ranks(self, messages: list[dict[str, Any]], model: str, answer: str) -> list[int]:
        """Every answer token's rank under the reference, in one request."""
        body = {"model": model, "messages": [*messages, {"role": "assistant", "content": answer}],
                "continue_final_message": True, "add_generation_prompt": False, "max_tokens": 1,
                "temperature": 0.0, "prompt_logprobs": self.top_k}
        reply = self.post(body)
        prompt_logprobs = reply.get("prompt_logprobs")
        if not isinstance(prompt_logprobs, list):
            raise ReferenceUnavailable("the reference returned no prompt_logprobs")
        return answer_ranks(prompt_logprobs, answer)

    def reference_length(self, messages: list[dict[str, Any]], model: str, max_new_tokens: int) -> int:
        """How many tokens the reference itself answers with (greedy), remembered per request."""
        key = hashlib.sha256(json.dumps([model, messages, max_new_tokens], sort_keys=True, default=str)
                             .encode()).hexdigest()
        if key in self.lengths:
            self.lengths.move_to_end(key)
            return self.lengths[key]
        reply = self.post({"model": model, "messages": messages, "max_tokens": max_new_tokens, "temperature": 0.0})
        try:
            length = int(reply["usage"]["completion_tokens"])
        except (KeyError, TypeError, ValueError):
            raise ReferenceUnavailable("the reference's answer has no usage.completion_tokens") from None
        self.lengths[key] = length
        if len(self.lengths) > self.remember:
            self.lengths.popitem(last=False)
        return length

    def quality(self, messages: list[dict[str, Any]], model: str, answer: str, *, max_new_tokens: int,
                salt: str) -> float:
        """Agreement at the secretly chosen positions times completeness; 0 for what the reference cannot read."""
        if not self.serves(model) or not answer.strip():
            return 0.0
        try:
            ranks = self.ranks(messages, model, answer)
        except Unreadable:
            return 0.0
        if not ranks or len(ranks) > max_new_tokens:
            return 0.0
        positions = checked_positions(len(ranks), self.share, self.secret, salt)
        agreed = sum(1 for p in positions if ranks[p] <= self.top_k) / len(positions)
        try:
            wanted = self.reference_length(messages, model, max_new_tokens)
        except Unreadable:
            return 0.0
        return agreed * min(1.0, len(ranks) / max(1, wanted))
