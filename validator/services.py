"""The validator's services, in one typed object opened and closed in one place.

    services = await Services.open(settings)      # in the lifespan: chain, metagraph, queue, book, loops
    app.state.services = services
    ...
    services = services_of(request)               # in a route (``validator.routes``) or a probe
    ...
    await services.close()                         # loops stopped, then the client, the chain, the database

What the scoring loop, the weight setter and the routes share is written here, typed, instead of a dozen
``app.state`` attributes. The reward rules are not here: they live in ``scorer``, ``scores``,
``rewards``, ``organic`` and ``weights``, which these services only assemble.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Optional

from loguru import logger
from starlette.requests import Request

from shared.auth import RequestVerifier, Signer
from shared.chain import Chain, SubnetState, open_chain
from shared.chain.cache import MetagraphCache
from shared.epistula import signer_for
from shared.nonce_store import open_nonce_store
from shared.sessions import SessionTable
from shared.signed_http import SignedClient
from shared.wallet import load_hotkey
from shared.web_check import PageFetcher

from .availability import AvailabilityPoller
from .database import Database
from .metrics import ValidatorMetrics
from .organic import OrganicEvidence
from .scorer import Scorer
from .scores import ScoreBook
from .scoring_queue import ScoringQueue
from .settings import ValidatorSettings, parse_mix
from .synthetic import SyntheticLoop
from .web_retrieval_reward import WebJudge
from .weights import WeightSetter


def gate_scores_by_coverage(book: ScoreBook, poller: AvailabilityPoller, subnet: SubnetState) -> None:
    """Tell the score book what each miner advertises, against what the subnet's miners offer at all."""
    served: dict = {}
    for neuron in subnet.neurons:
        record = poller.get(neuron)
        if record is not None and record.availability is not None:
            served[neuron] = {t for t, on in record.availability.task_availabilities.items() if on}
    offered = set().union(*served.values()) if served else set()
    for neuron, tasks in served.items():
        book.set_coverage(neuron.uid, neuron.hotkey, tasks, offered)


@dataclass(eq=False)
class Services:
    """What one validator process runs with; built by ``open``, torn down by ``close``."""

    settings: ValidatorSettings
    signer: Signer
    chain: Chain
    client: SignedClient  # its calls all go to miners
    verifier: RequestVerifier
    metagraph: MetagraphCache
    poller: AvailabilityPoller
    database: Database
    queue: ScoringQueue
    book: ScoreBook
    scorer: Scorer
    synthetic: SyntheticLoop
    weights: WeightSetter
    metrics: ValidatorMetrics
    tasks: list = field(default_factory=list)

    @classmethod
    async def open(cls, settings: ValidatorSettings) -> "Services":
        keypair = load_hotkey(settings.wallet_name, settings.wallet_hotkey, settings.wallet_path)
        signer = Signer(keypair)
        chain = open_chain(
            settings.chain,
            hotkey=signer.hotkey,
            subnet_file=settings.subnet_file,
            network=settings.network,
            netuid=settings.netuid,
            keypair=keypair,
        )
        allowed = settings.allowed_hotkeys(signer.hotkey)
        nonces = open_nonce_store(
            redis_url=settings.redis_url,
            sqlite_path=f"{settings.data_dir}/validator-nonces.sqlite",
            namespace=signer.hotkey,
        )
        client = SignedClient(signer_for(settings.miner_protocol, keypair), sessions=settings.miner_sessions)
        verifier = RequestVerifier(
            signer.hotkey, nonces, allowed.__contains__, why_forbidden="hotkey is not on the validator's allow-list",
            max_body_bytes=settings.signed_body_max_bytes,
            sessions=SessionTable(signer.hotkey) if settings.validator_offer_sessions else None,
        )
        poller = AvailabilityPoller(client, settings.availability_timeout)
        database = Database(settings.database_path)
        queue = ScoringQueue(database, settings.scoring_queue_max)
        book = ScoreBook(database, settings.score_alpha, settings.task_weights(),
                         min_coverage=settings.min_task_coverage, probation_seconds=settings.probation_seconds)
        web = WebJudge(PageFetcher(timeout=settings.web_fetch_timeout, max_bytes=settings.web_fetch_max_bytes,
                                   allow_private=settings.web_fetch_allow_private),
                       allowed_hosts=settings.allowed_web_hosts, max_per_host=settings.web_max_results_per_host)
        reference = settings.reference_model()
        organic = OrganicEvidence(database, bound=settings.organic_bound, alpha=settings.organic_alpha,
                                  per_key_cap=settings.organic_per_key_cap,
                                  per_miner_cap=settings.organic_per_miner_cap, window=settings.organic_window_seconds)

        def advertises(uid: int, task: str, model: Optional[str]) -> bool:
            record = poller.records.get(uid)
            return record is not None and record.availability is not None and record.availability.serves(task, model)

        scorer = Scorer(database, queue, book, rules=settings.rules(), web=web,
                        reference=reference, organic=organic, advertises=advertises)
        synthetic = SyntheticLoop(client, poller, mix=parse_mix(settings.task_mix),
                                  sample_size=settings.synthetic_sample_size, timeout=settings.synthetic_timeout,
                                  interval=settings.synthetic_interval_seconds,
                                  verifiable_models=reference.models if reference else frozenset())
        services = cls(settings=settings, signer=signer, chain=chain, client=client, verifier=verifier,
                       metagraph=MetagraphCache(chain, settings.metagraph_sync_seconds), poller=poller,
                       database=database, queue=queue, book=book, scorer=scorer, synthetic=synthetic,
                       weights=WeightSetter(chain, book, settings.weights_interval_seconds),
                       metrics=ValidatorMetrics())
        logger.info("validator {} on {}:{} (chain={})", signer.hotkey, settings.validator_host,
                    settings.validator_port, settings.chain)
        await services.metagraph.refresh()
        services.tasks = [
            asyncio.create_task(services.metagraph.run(), name="metagraph"),
            asyncio.create_task(services.availability_loop(), name="availability"),
            asyncio.create_task(synthetic.run(services.metagraph, signer.hotkey, queue), name="synthetic"),
            asyncio.create_task(scorer.run(services.metagraph), name="scorer"),
            asyncio.create_task(services.weights.run(), name="weights"),
        ]
        return services

    async def availability_loop(self) -> None:
        while True:
            if self.metagraph.state is not None:
                answered = await self.poller.poll_all(self.metagraph.state, self.signer.hotkey)
                gate_scores_by_coverage(self.book, self.poller, self.metagraph.state)
                logger.debug("availability: {} miners answered", answered)
            await asyncio.sleep(self.settings.availability_poll_seconds)

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.client.close()
        await self.chain.close()
        self.database.close()


def services_of(request: Request) -> Services:
    """The validator's ``Services``, from a request (or as a dependency: ``Depends(services_of)``)."""
    return request.app.state.services
