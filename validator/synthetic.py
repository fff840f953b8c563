"""Synthetic tasks: the validator asks miners questions it knows how to judge.

Every ``SYNTHETIC_INTERVAL_SECONDS`` a round starts (up to ``MAX_ROUNDS_IN_FLIGHT``
at once, so a slow miner does not slow the schedule): pick a task by the
configured mix and a model the validator can judge, choose up to
``SYNTHETIC_SAMPLE_SIZE`` miners available for both, and send each, signed,
*its own* request — its own seed and its own prompt — so that honest answers
differ and an answer copied from another miner answers the wrong request
(``ScoringItem.requests_by_uid``). Wait at most ``SYNTHETIC_TIMEOUT`` for
each, and queue the answers for scoring like any forwarded item. Web
retrieval rounds (one query for all: honest miners find the same pages) go to
the miners' ``/web_retrieval``; the rest to ``/v1/chat/completions``.
A miner that times out or breaks is recorded as such and earns 0 from the
scorer.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Optional, Union

import aiohttp
from loguru import logger

from shared.chain import SubnetState
from shared.chat_stream import StreamBroken, StreamRecord, event_budget, finish, sse_chunks
from shared.corpus import Corpus
from shared.request_ids import new_id
from shared.schemas import (
    WEB_RETRIEVAL_TASK,
    ChatMessage,
    MinerChatRequest,
    MinerResponse,
    MinerWebRetrievalRequest,
    SamplingParameters,
    ScoringItem,
)
from shared.signed_http import SignedClient
from shared.tasks import Task
from shared.web_retrieval import as_chat_request, web_query

from .availability import AvailabilityPoller
from .exact_check import is_builtin

Request = Union[MinerChatRequest, MinerWebRetrievalRequest]

MAX_ROUNDS_IN_FLIGHT = 4
MAX_ANSWER_BYTES = 64 * 1024 * 1024  # of one miner's streamed answer: as the API's MINER_MAX_ANSWER_BYTES
PROMPTS = (
    "Explain {topic} in simple terms.",
    "Write a short note about {topic}.",
    "What should a newcomer know about {topic}?",
    "Summarise the main idea behind {topic}.",
    "Give one practical example related to {topic}.",
)


def inference_request(rng: random.Random, corpus: Corpus, model: str) -> MinerChatRequest:
    topic = rng.choice(corpus.passages).title.lower()
    return MinerChatRequest(
        messages=[ChatMessage(role="user", content=rng.choice(PROMPTS).format(topic=topic))],
        model=model,
        task=Task.INFERENCE.value,
        seed=rng.randrange(2**32),
        sampling_parameters=SamplingParameters(
            temperature=rng.choice((0.3, 0.7, 1.0)), top_p=rng.choice((0.9, 0.95)), top_k=50,
            max_new_tokens=rng.randrange(32, 97),
        ),
        stream_options={"include_usage": True},
    )


def question_request(rng: random.Random, corpus: Corpus, model: str) -> MinerChatRequest:
    question = rng.choice(rng.choice(corpus.passages).questions)
    return MinerChatRequest(
        messages=[ChatMessage(role="user", content=question)],
        model=model,
        task=Task.WEB_QUESTION_ANSWERING.value,
        seed=rng.randrange(2**32),
        sampling_parameters=SamplingParameters(max_new_tokens=160),
        stream_options={"include_usage": True},
    )


def own_requests(build, miners: list, rng: random.Random) -> dict[int, MinerChatRequest]:
    """One request per miner, each with a seed no other miner of the round has."""
    requests: dict[int, MinerChatRequest] = {}
    seeds: set[int] = set()
    for neuron in miners:
        request = build()
        while request.seed in seeds:
            request.seed = rng.randrange(2**32)
        seeds.add(request.seed)
        requests[neuron.uid] = request
    return requests


def web_retrieval_request(rng: random.Random, corpus: Corpus) -> MinerWebRetrievalRequest:
    question = rng.choice(rng.choice(corpus.passages).questions)
    return MinerWebRetrievalRequest(search_query=question, n_results=rng.randint(1, 3))


async def query(client: SignedClient, uid: int, hotkey: str, address: str, request: MinerChatRequest,
                timeout: float) -> MinerResponse:
    """One miner's whole streamed answer, or how it failed (a synthetic request asks for one choice; its
    stream may bring as many events as its tokens allow, ``event_budget``)."""
    body = request.model_dump_json(exclude_none=True).encode()
    record = StreamRecord(choices=1, max_events=event_budget(request.sampling_parameters.max_new_tokens, 1))
    try:
        async with asyncio.timeout(timeout):
            async with client.post_stream(address, "/v1/chat/completions", body, receiver=hotkey,
                                          connect_timeout=min(timeout, 3.0), read_timeout=timeout) as response:
                if response.status != 200:
                    raise StreamBroken(f"HTTP {response.status}")
                async for chunk in sse_chunks(response.content, MAX_ANSWER_BYTES):
                    record.take(chunk)
                await finish(response)
    except TimeoutError:
        return record.response(uid, hotkey, "timeout", "no complete answer in time")
    except StreamBroken as exc:
        return record.response(uid, hotkey, "error", str(exc))
    except (aiohttp.ClientError, OSError) as exc:
        return record.response(uid, hotkey, "error", f"{type(exc).__name__}: {exc}")
    return record.response(uid, hotkey, "ok")


class SyntheticLoop:
    def __init__(self, client: SignedClient, poller: AvailabilityPoller, *, mix: dict[str, float],
                 sample_size: int, timeout: float, interval: float, rng: Optional[random.Random] = None,
                 verifiable_models: frozenset[str] = frozenset()):
        self.client = client
        self.verifiable_models = verifiable_models  # real models the reference can check, besides builtin ones
        self.poller = poller
        self.mix = mix
        self.sample_size = sample_size
        self.timeout = timeout
        self.interval = interval
        self.rng = rng or random.Random()
        self.corpus = Corpus.load()
        self.rounds = 0

    def build(self, state: SubnetState, self_hotkey: str) -> Optional[tuple[str, Optional[str], list]]:
        """A task, the model it names (None for web retrieval) and the miners to ask, or None when none can."""
        tasks = list(self.mix)
        weights = [self.mix[t] for t in tasks]
        for task in self.rng.choices(tasks, weights, k=len(tasks) * 2):
            if task not in (Task.INFERENCE, Task.WEB_QUESTION_ANSWERING, Task.WEB_RETRIEVAL):
                continue
            serving = []
            models: set[str] = set()
            for neuron in state.neurons:
                record = self.poller.get(neuron)
                if neuron.hotkey == self_hotkey or not neuron.axon or not record or not record.availability:
                    continue
                if record.availability.task_availabilities.get(task):
                    serving.append((neuron, record.availability))
                    models.update(m for m, ok in record.availability.llm_model_availabilities.items() if ok)
            model = None
            if task != Task.WEB_RETRIEVAL:
                checkable = sorted(m for m in models if is_builtin(m) or m in self.verifiable_models)
                if not checkable:
                    continue  # nothing to verify answers against
                model = self.rng.choice(checkable)
                serving = [(n, a) for n, a in serving if a.llm_model_availabilities.get(model)]
            if serving:
                chosen = self.rng.sample(serving, min(self.sample_size, len(serving)))
                return task, model, [neuron for neuron, _ in chosen]
        return None

    async def round(self, state: SubnetState, self_hotkey: str) -> Optional[ScoringItem]:
        built = self.build(state, self_hotkey)
        if built is None:
            return None
        task, model, miners = built
        request_id = new_id("synthetic")
        if task == Task.WEB_RETRIEVAL:
            request = web_retrieval_request(self.rng, self.corpus)
            responses = await asyncio.gather(
                *(web_query(self.client, n.uid, n.hotkey, n.axon, request, self.timeout) for n in miners)
            )
            self.rounds += 1
            return ScoringItem(request_id=request_id, source="synthetic", task=WEB_RETRIEVAL_TASK,
                               created_at=time.time(), request=as_chat_request(request), responses=list(responses),
                               search_query=request.search_query, n_results=request.n_results)
        if task == Task.INFERENCE:
            requests = own_requests(lambda: inference_request(self.rng, self.corpus, model), miners, self.rng)
        else:
            requests = own_requests(lambda: question_request(self.rng, self.corpus, model), miners, self.rng)
        responses = await asyncio.gather(
            *(query(self.client, n.uid, n.hotkey, n.axon, requests[n.uid], self.timeout) for n in miners)
        )
        self.rounds += 1
        return ScoringItem(request_id=request_id, source="synthetic", task=task, created_at=time.time(),
                           request=requests[miners[0].uid], responses=list(responses), requests_by_uid=requests)

    async def round_and_queue(self, state: SubnetState, self_hotkey: str, queue, slots: asyncio.Semaphore) -> None:
        try:
            item = await self.round(state, self_hotkey)
            if item is not None:
                await queue.put([item])
        except Exception:  # one bad round must not end the loop
            logger.exception("synthetic round failed")
        finally:
            slots.release()

    async def run(self, metagraph, self_hotkey: str, queue) -> None:
        slots = asyncio.Semaphore(MAX_ROUNDS_IN_FLIGHT)
        running: set[asyncio.Task] = set()
        try:
            while True:
                await asyncio.sleep(self.interval)
                if metagraph.state is None:
                    continue
                await slots.acquire()
                task = asyncio.create_task(self.round_and_queue(metagraph.state, self_hotkey, queue, slots))
                running.add(task)
                task.add_done_callback(running.discard)
        finally:
            for task in running:
                task.cancel()
