"""A miner that answers more choices than it was asked for (``extra_choices`` in tests/dishonest_miner.py).

Each of its extra choices would reach the client as one more answer it never asked for, and its text would be
counted against the client's token quota. The API takes such an answer as malformed (``shared.chat_stream``):
pinned to that miner, a whole answer is a 502 in OpenAI's error shape and a stream stops with an error event
before the first extra choice; unpinned, the client gets the honest miner's answer with the one choice it asked
for. The validator's synthetic rounds fail it the same way.
"""

from __future__ import annotations

import gateway_client as gw
import openai
import pytest
from openai import OpenAI

MODULE = "tests.dishonest_miner"
HONEST, PADDER = 1, 2
MESSAGES = [{"role": "user", "content": "Name one property of a hash function."}]


@pytest.fixture(scope="module")
def padded(tmp_path_factory, subnet_factory):
    net = subnet_factory(tmp_path_factory.mktemp("extra-choices"), behaviours=["good", "extra_choices"],
                         api_workers=1, miner_modules=["miner", MODULE], extra_env={"MINER_CHUNK_DELAY": "0"})
    yield net
    net.stop()


@pytest.fixture(scope="module")
def client(padded):
    return OpenAI(base_url=padded.api_url + "/v1", api_key=padded.create_api_key("padded"), max_retries=0, timeout=30)


def test_pinned_whole_answer_with_extra_choices_is_a_502(client):
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="default", messages=MESSAGES, max_tokens=6, extra_body={"uids": [PADDER]})
    assert caught.value.status_code == 502
    assert "asked for" in caught.value.body["message"], caught.value.body


def test_pinned_stream_stops_before_an_extra_choice(client):
    chunks, failure = [], None
    try:
        for chunk in client.chat.completions.create(model="default", messages=MESSAGES, max_tokens=6, stream=True,
                                                    n=2, extra_body={"uids": [PADDER]}):
            chunks.append(chunk)
    except openai.APIError as exc:  # the SDK raises the in-band error event
        failure = exc
    assert failure is not None and "asked for" in str(failure)
    assert {choice.index for chunk in chunks for choice in chunk.choices} <= {0, 1}


async def test_a_race_with_the_padder_in_it_answers_with_the_honest_miners_choices(padded, client):
    """Both miners asked at once (pinned together): the padder's answer is malformed, whenever it comes, and
    the honest one answers; the request log says why the padder's did not count."""
    ids = []
    for n in (1, 2):
        for _ in range(3):
            whole = client.chat.completions.create(model="default", messages=MESSAGES, max_tokens=6, n=n,
                                                   extra_body={"uids": [PADDER, HONEST]})
            assert [choice.index for choice in whole.choices] == list(range(n)), whole
            assert whole.miner_uid == HONEST and all(choice.message.content for choice in whole.choices)
            ids.append(whole.id)

    async def logged():
        logs = (await gw.admin(padded, "GET", "/logs?limit=100&since=2020-01-01")).body["logs"]
        mine = [log for log in logs if log["request_id"] in ids]
        return mine if len(mine) == len(ids) and all(len(log["miners"]) == 2 for log in mine) else None

    logs = await gw.eventually(logged, timeout=15)
    assert logs, "the requests were not logged with both miners"
    for log in logs:
        padder = next(m for m in log["miners"] if m["uid"] == PADDER)
        assert padder["outcome"] != "ok" and "asked for" in padder["error"], padder
