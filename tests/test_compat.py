"""Drop-in compatibility, each tested with the client it serves (docs/compatibility.md).

Miners (uid: models, tasks):
  1 good  builtin-small   Inference, WebQuestionAnswering, WebRetrieval
  2 good  builtin-large   the same and MultiStepReasoning
MODEL_ALIASES maps the subnet's documented model and BitNet's to them; UNKNOWN_MODEL is the default (any).
MINER_PROTOCOL=epistula: every call of the API and the validator to a miner here is signed with Epistula.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys

import openai
import pytest
import requests
from openai import OpenAI

from api.settings import ApiSettings

SUBNET_MODEL = "hugging-quants/Meta-Llama-3.1-70B-Instruct-AWQ-INT4"
TASKS = "InferenceTask,WebQuestionAnsweringTask,WebRetrievalTask"
MINERS = [
    ("good", {"miner_models": "builtin-small", "miner_tasks": TASKS}),
    ("good", {"miner_models": "builtin-large", "miner_tasks": TASKS + ",MultiStepReasoningTask"}),
]
MESSAGES = [{"role": "user", "content": "What does a miner do?"}]


@pytest.fixture(scope="module")
def net(tmp_path_factory, subnet_factory):
    subnet = subnet_factory(tmp_path_factory.mktemp("compatnet"), behaviours=[b for b, _ in MINERS],
                            miner_settings=[s for _, s in MINERS], api_workers=1,
                            extra_env={"MODEL_ALIASES": f"{SUBNET_MODEL}=builtin-large, bitnet-model=builtin-small",
                                       "MINER_PROTOCOL": "epistula"})
    yield subnet
    subnet.stop()


@pytest.fixture(scope="module")
def key(net) -> str:
    return net.create_api_key("compat")


@pytest.fixture(scope="module")
def client(net, key) -> OpenAI:
    return OpenAI(base_url=net.api_url + "/v1", api_key=key, max_retries=0, timeout=30)


def hotkey_of(net, uid: int) -> str:
    return next(m.hotkey for m in net.members if m.role == "miner" and m.uid == uid)


# -- 1. model names ----------------------------------------------------------------------------------------

def test_the_subnets_documented_openai_example_works(client):
    """The subnet's README example, model name and extra_body as published."""
    completion = client.chat.completions.create(
        model=SUBNET_MODEL, messages=MESSAGES, stream=False,
        extra_body={"task": "InferenceTask", "sampling_parameters": {"temperature": 0.7, "top_p": 0.95,
                    "top_k": 50, "max_new_tokens": 8, "do_sample": True}})
    assert (completion.model, completion.miner_uid) == ("builtin-large", 2)
    assert completion.choices[0].message.content
    bitnet = client.chat.completions.create(model="bitnet-model", messages=MESSAGES, max_tokens=3)
    assert (bitnet.model, bitnet.miner_uid) == ("builtin-small", 1)


def test_aliases_are_listed_with_what_they_stand_for(client):
    listed = {m.id: m for m in client.models.list().data}
    assert listed[SUBNET_MODEL].alias_of == "builtin-large" and listed["bitnet-model"].alias_of == "builtin-small"
    assert client.models.retrieve(SUBNET_MODEL).alias_of == "builtin-large"


def test_an_unknown_model_is_served_and_the_answer_says_by_what(client):
    seen = set()
    for _ in range(6):
        completion = client.chat.completions.create(model="gpt-4", messages=MESSAGES, max_tokens=3)
        assert completion.model == {1: "builtin-small", 2: "builtin-large"}[completion.miner_uid]
        seen.add(completion.miner_uid)
    chunks = list(client.chat.completions.create(model="gpt-4", messages=MESSAGES, max_tokens=3, stream=True))
    assert {c.model for c in chunks} == {{1: "builtin-small", 2: "builtin-large"}[chunks[0].miner_uid]}


def test_model_at_uid_and_at_hotkey_pin_the_miner(net, client):
    for _ in range(3):
        assert client.chat.completions.create(model="builtin-small@1", messages=MESSAGES,
                                              max_tokens=3).miner_uid == 1
        pinned = client.chat.completions.create(model=f"builtin-large@{hotkey_of(net, 2)}", messages=MESSAGES,
                                                max_tokens=3)
        assert (pinned.miner_uid, pinned.model) == (2, "builtin-large")
    anything = client.chat.completions.create(model="@2", messages=MESSAGES, max_tokens=3)
    assert (anything.miner_uid, anything.model) == (2, "builtin-large")
    with pytest.raises(openai.BadRequestError) as unknown:
        client.chat.completions.create(model="builtin-small@5FakeHotkey", messages=MESSAGES)
    assert unknown.value.body["code"] == "unknown_miner"
    with pytest.raises(openai.BadRequestError) as both:
        client.chat.completions.create(model="builtin-small@1", messages=MESSAGES, extra_body={"uids": [2]})
    assert both.value.body["code"] == "conflicting_uids"


def test_a_key_limited_to_some_models_cannot_widen_them_through_an_unknown_one(net, client):
    answer = requests.post(net.api_url + "/api_management/create-api-key/?allowed_models=builtin-small",
                           headers={"admin-key": net.admin_key}, timeout=10).json()
    limited = OpenAI(base_url=net.api_url + "/v1", api_key=answer["api_key"], max_retries=0)
    assert limited.chat.completions.create(model="bitnet-model", messages=MESSAGES, max_tokens=3).miner_uid == 1
    with pytest.raises(openai.PermissionDeniedError):
        limited.chat.completions.create(model="gpt-4", messages=MESSAGES, max_tokens=3)


def test_unknown_model_policy_settings():
    assert ApiSettings(_env_file=None).unknown_model == "any"
    assert ApiSettings(_env_file=None, unknown_model="reject").unknown_model == "reject"
    with pytest.raises(ValueError):
        ApiSettings(_env_file=None, model_aliases="no-target")


# -- 2. the subnet's API surface ---------------------------------------------------------------------------

def test_reasoning_fast_is_the_multi_step_reasoning_task(client):
    for _ in range(3):  # only uid 2 serves MultiStepReasoningTask
        completion = client.chat.completions.create(model="default", messages=MESSAGES, max_tokens=3,
                                                    extra_body={"inference_mode": "Reasoning-Fast"})
        assert completion.miner_uid == 2


def test_api_management_answers_as_the_subnets_api(net):
    """The subnet's key scripts read ``response.json()["detail"]``; OpenAI clients read ``error``."""
    url = net.api_url + "/api_management"
    created = requests.post(url + "/create-api-key/", params={"rate_limit": 10},
                            headers={"admin-key": net.admin_key}, timeout=10)
    assert created.status_code == 200 and created.json()["message"] == "API key created"
    api_key = created.json()["api_key"]
    modified = requests.put(f"{url}/modify-api-key/{api_key}", params={"rate_limit": 20},
                            headers={"admin-key": net.admin_key}, timeout=10)
    assert modified.status_code == 200
    assert (modified.json()["message"], modified.json()["api_key"]) == ("API key updated", api_key)

    wrong = requests.post(url + "/create-api-key/", params={"rate_limit": 10}, headers={"admin-key": "nope"},
                          timeout=10)
    assert wrong.status_code == 403
    assert wrong.json()["detail"] == "Invalid admin key" == wrong.json()["error"]["message"]
    missing = requests.post(url + "/create-api-key/", params={"rate_limit": 10}, timeout=10)
    assert missing.status_code == 422
    assert missing.json()["detail"][0]["loc"] == ["header", "admin-key"]
    assert missing.json()["error"]["code"] == "missing_admin_key"
    gone = requests.delete(f"{url}/delete-api-key/not-a-key", headers={"admin-key": net.admin_key}, timeout=10)
    assert gone.status_code == 404 and gone.json()["detail"] == "API key not found"
    deleted = requests.delete(f"{url}/delete-api-key/{api_key}", headers={"admin-key": net.admin_key}, timeout=10)
    assert deleted.json() == {"message": "API key deleted"}
    bad = requests.post(url + "/create-api-key/", params={"rate_limit": "x"}, headers={"admin-key": net.admin_key},
                        timeout=10)
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", "rate_limit"]


def test_old_web_retrieval_with_query_parameters_and_target_uids(net, key):
    """The subnet's old per-uid script: query string, and ``target_uids`` as strings in the body."""
    headers = {"api-key": key, "Content-Type": "application/json"}
    params = {"search_query": "Why does a validator need a permit?"}
    data = {"n_miners": 1, "n_results": 2, "max_response_time": 10, "target_uids": ["2"]}
    response = requests.post(net.api_url + "/web_retrieval", headers=headers, params=params, json=data, timeout=30)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert [m["uid"] for m in answer["miners"]] == [2]
    assert all(r["miner_uid"] == 2 for r in answer["results"])
    today = requests.post(net.api_url + "/web_retrieval", headers=headers, timeout=30,
                          json={"search_query": "Why does a validator need a permit?", "uids": [1]})
    assert today.status_code == 200 and [m["uid"] for m in today.json()["miners"]] == [1]
    assert requests.post(net.api_url + "/web_retrieval", headers=headers, json={}, timeout=10).status_code == 422


def test_the_subnets_env_names_are_read(monkeypatch):
    monkeypatch.setenv("WORKERS", "4")
    monkeypatch.setenv("VALIDATOR_API", "0.0.0.0:8094")
    monkeypatch.setenv("API_PORT", "42170")
    settings = ApiSettings(_env_file=None)
    assert (settings.api_workers, settings.validator_url, settings.api_port) == (4, "http://0.0.0.0:8094", 42170)
    monkeypatch.setenv("API_WORKERS", "2")  # ours win when both are set
    assert ApiSettings(_env_file=None).api_workers == 2


def test_keys_import_keeps_the_subnets_keys_working_stored_hashed(net, tmp_path):
    keys = {"0123456789abcdef0123456789abcdef": {"rate_limit": 30, "usage": 4},
            "fedcba9876543210fedcba9876543210": {"rate_limit": 5, "usage": 0}}
    path = tmp_path / "api_keys.json"
    path.write_text(json.dumps(keys))
    env = {**os.environ, "API_ENV_FILE": "/nonexistent", "DATA_DIR": str(net.directory / "data" / "api")}

    def run() -> dict:
        done = subprocess.run([sys.executable, "-m", "api.cli", "keys", "import", str(path)], env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert not any(k in done.stdout for k in keys)
        return json.loads(done.stdout)

    first = run()
    assert len(first["imported"]) == 2 and first["already_present"] == []
    assert sorted(run()["already_present"]) == sorted(first["imported"])  # twice changes nothing
    for plain in keys:  # the subnet's docs send the key as api-key; the openai SDK as a Bearer token
        assert requests.post(net.api_url + "/v1/chat/completions", headers={"api-key": plain}, timeout=30,
                             json={"messages": MESSAGES, "max_tokens": 3}).status_code == 200
        sdk = OpenAI(base_url=net.api_url + "/v1", api_key=plain, max_retries=0)
        assert sdk.chat.completions.create(model="default", messages=MESSAGES, max_tokens=3).choices
    info = requests.get(net.api_url + "/api_management/keys/0123456789abcdef0123456789abcdef",
                        headers={"admin-key": net.admin_key}, timeout=10).json()
    assert info["rate_limit"] == 30
    dump = b"".join(bytes(str(row), "utf8") for row in sqlite3.connect(
        net.directory / "data" / "api" / "api.sqlite").execute("SELECT * FROM api_keys"))
    assert not any(k.encode() in dump for k in keys)


# -- 3. compatibility routes -------------------------------------------------------------------------------

def test_btvep_chat_as_its_docs_show_it(net, key):
    url = net.api_url + "/chat"
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}",
               "Endpoint-Version": "2023-05-19"}
    data = {"messages": [{"role": "user", "content": "What is 1+1?"}]}
    response = requests.post(url, headers=headers, data=json.dumps(data), timeout=30)
    assert response.status_code == 200, response.text
    reply = response.json()["message"]["content"]
    assert reply
    choice = response.json()["choices"][0]
    assert choice["responder_hotkey"] == hotkey_of(net, choice["uid"])
    assert choice["message"] == {"role": "assistant", "content": reply}
    assert response.json()["failed_responses"] == [] and response.headers["Endpoint-Version"] == "2023-05-19"
    pinned = requests.post(url, headers=headers, json={**data, "uids": [2]}, timeout=30).json()
    assert pinned["choices"][0]["uid"] == 2
    future = requests.post(url, headers={**headers, "Endpoint-Version": "2099-01-01"}, json=data, timeout=30)
    assert future.status_code == 400 and "2023-05-19" in future.json()["error"]["message"]


def test_llama_cpp_completion(net, key):
    url = net.api_url + "/completion"
    headers = {"Authorization": f"Bearer {key}"}
    response = requests.post(url, headers=headers, timeout=30,
                             json={"prompt": "Building a website can be done in 10 simple steps:", "n_predict": 3})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["content"] and answer["stop"] is True
    assert (answer["tokens_predicted"], answer["stop_type"]) == (3, "limit")

    with requests.post(url, headers=headers, json={"prompt": "Hello", "n_predict": 4, "stream": True},
                       stream=True, timeout=30) as streamed:
        assert streamed.status_code == 200
        events = [json.loads(line[6:]) for line in streamed.iter_lines(decode_unicode=True)
                  if line.startswith("data: ")]
    assert all(e["stop"] is False and e["content"] for e in events[:-1]) and len(events) > 1
    assert events[-1]["stop"] is True and events[-1]["tokens_predicted"] == 4
    assert "".join(e["content"] for e in events)


def test_n_predict_on_v1_completions(client):
    short = client.completions.create(model="default", prompt="Say something", extra_body={"n_predict": 2})
    assert (short.usage.completion_tokens, short.choices[0].finish_reason) == (2, "length")
    longer = client.completions.create(model="default", prompt="Say something", max_tokens=5,
                                       extra_body={"n_predict": 2})  # max_tokens, when given, wins
    assert longer.usage.completion_tokens == 5


def test_an_n_predict_no_miner_takes_is_the_client_s_error_not_a_502(client, net, key):
    """Bounded as ``max_tokens`` is (32,768): past that, every miner refuses the request, so it is a 422 here,
    before any miner is asked (it was a 502 naming the miners' refusal)."""
    with pytest.raises(openai.UnprocessableEntityError) as refused:
        client.completions.create(model="default", prompt="Say something", extra_body={"n_predict": 106988})
    assert "n_predict" in refused.value.body["message"]
    llama = requests.post(net.api_url + "/completion", headers={"Authorization": f"Bearer {key}"}, timeout=30,
                          json={"prompt": "Hello", "n_predict": 32769})
    assert llama.status_code == 422 and "n_predict" in llama.json()["error"]["message"]


def test_unify_get_credits(net, key):
    answer = requests.get(net.api_url + "/get_credits", headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert answer.status_code == 200 and set(answer.json()) == {"id", "credits"}
    assert answer.json()["credits"] is None  # unlimited
    assert requests.get(net.api_url + "/get_credits", timeout=10).status_code == 401


def test_unknown_routes_answer_a_helpful_404(net, key):
    no_v1 = OpenAI(base_url=net.api_url, api_key=key, max_retries=0)
    with pytest.raises(openai.NotFoundError) as missing:
        no_v1.chat.completions.create(model="default", messages=MESSAGES)
    assert "/v1/chat/completions" in missing.value.body["message"] and "/v1" in missing.value.body["message"]
    assert missing.value.body["code"] == "route_not_found"
    typo = requests.get(net.api_url + "/v1/model", headers={"api-key": key}, timeout=10)
    assert typo.status_code == 404 and "/v1/models" in typo.json()["error"]["message"]
    twice = requests.post(net.api_url + "/v1/v1/completions", timeout=10).json()["error"]["message"]
    assert "POST /v1/completions" in twice and "twice" in twice
    admin = requests.get(net.api_url + "/api_management/no-such", headers={"admin-key": net.admin_key}, timeout=10)
    assert admin.status_code == 404 and admin.json()["detail"] == "Not Found"  # what the subnet's API answers
