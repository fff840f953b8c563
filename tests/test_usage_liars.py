"""Miners that lie in their ``usage``, through the whole stack: the client, its key's counters and the request
log see counts that can be true (``tests/test_usage_claims.py`` has the rule itself).

Two dishonest miners answer honestly but report token counts of 2**61 (to burn a client's token quota, or
overflow the store's counters after a few answers) and of -1,000,000 (to hand tokens back). Each is pinned for
a whole answer and a stream with usage; every answer is a 200 whose usage is our own count, and the key's
totals after the four answers are a few dozen tokens.
"""

from __future__ import annotations

import gateway_client as gw
import pytest
from openai import OpenAI

MODULE = "tests.dishonest_miner"
LIES = {2: 2**61, 3: -1_000_000}  # uid → what it claims
MESSAGES = [{"role": "user", "content": "Explain consensus in a sentence."}]


@pytest.fixture(scope="module")
def liars(tmp_path_factory, subnet_factory):
    net = subnet_factory(tmp_path_factory.mktemp("usage-liars"), behaviours=["good", "usage_liar", "usage_liar"],
                         api_workers=1, miner_modules=["miner", MODULE, MODULE],
                         miner_settings=[{}, {"usage_lie": LIES[2]}, {"usage_lie": LIES[3]}],
                         extra_env={"MINER_CHUNK_DELAY": "0"})
    yield net
    net.stop()


def believable(usage) -> bool:
    return (0 < usage.prompt_tokens <= 50 and 0 < usage.completion_tokens <= 6
            and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens)


async def test_lying_usage_is_never_billed_shown_or_logged(liars):
    answer = await gw.admin(liars, "POST", "/create-api-key/?name=liars")
    key, key_id = answer.body["api_key"], answer.body["id"]
    client = OpenAI(base_url=liars.api_url + "/v1", api_key=key, max_retries=0)
    for uid in LIES:
        whole = client.chat.completions.create(model="default", messages=MESSAGES, max_tokens=6,
                                               extra_body={"uids": [uid]})
        assert whole.miner_uid == uid and whole.choices[0].message.content and believable(whole.usage), whole.usage
        chunks = list(client.chat.completions.create(model="default", messages=MESSAGES, max_tokens=6, stream=True,
                                                     stream_options={"include_usage": True},
                                                     extra_body={"uids": [uid]}))
        assert believable(chunks[-1].usage), chunks[-1].usage

    async def counted():
        usage = (await gw.call("GET", liars.api_url + "/v1/usage", headers={"api-key": key})).body
        return usage if usage["requests"] == 4 else None

    usage = await gw.eventually(counted, timeout=10)
    assert usage, "usage not recorded"
    assert 0 < usage["prompt_tokens"] <= 200 and 0 < usage["completion_tokens"] <= 24, usage
    logs = (await gw.admin(liars, "GET", f"/logs?key={key_id}&since=2020-01-01")).body["logs"]
    assert len(logs) == 4 and all(log["outcome"] == "ok" for log in logs)
    for log in logs:
        assert 0 < log["completion_tokens"] <= 6 and 0 < log["prompt_tokens"] <= 50, log
        assert all(0 <= m["completion_tokens"] <= 6 for m in log["miners"]), log["miners"]
