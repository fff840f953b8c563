"""The builtin backend: the deterministic generator of ``shared.builtin_generator``, served as a stream.

The generator lives in ``shared/`` because the validator re-derives its output
to judge answers; this module only adapts it to the miner's backend protocol.
Its names are re-exported here for code that imported them from the miner.
"""

from __future__ import annotations

from typing import Any

from shared.builtin_generator import (  # noqa: F401 (re-exported)
    MAX_TOKENS,
    MIN_TOKENS,
    OPENERS,
    QA_TASK,
    VOCABULARY,
    DigestNumbers,
    answer_question,
    canonical_key,
    count_tokens,
    generate_completion,
    generate_tokens,
    last_user_words,
    message_text,
    prompt_tokens,
    vocabulary_size,
)

from .base import ChoiceStream, Outcome, all_at_once

COPIED_SEED_OFFSET = 1  # the demo's copy-cat answers another seed than its own: what a copied answer looks like


class BuiltinBackend:
    """The :class:`~miner.backends.base.Backend` over :func:`generate_completion`.

    ``copies`` is for the demo's copy-cat only: it answers as if it had been sent
    a neighbouring seed, which is what an answer copied from another miner of a
    synthetic round looks like to the validator (every miner gets its own seed).
    """

    def __init__(self, copies: bool = False):
        self.seed_offset = COPIED_SEED_OFFSET if copies else 0

    def open(self, request: Any, model: str, index: int) -> ChoiceStream:
        messages = [{"role": message.role, "content": message.content} for message in request.messages]
        sampling = request.sampling_parameters.model_dump()
        seed = request.seed + index + self.seed_offset
        if request.task == QA_TASK:
            limit = int(sampling.get("max_new_tokens", 1024))
            tokens = answer_question(messages, model, seed, limit)
            finish_reason = "length" if len(tokens) == limit else "stop"
        else:
            tokens, finish_reason = generate_completion(messages, model, seed, sampling)
        outcome = Outcome(finish_reason, prompt_tokens(messages), len(tokens))
        return ChoiceStream(all_at_once(tokens), outcome)

    async def close(self) -> None:
        return None
