"""The miner directory that API workers route by: metagraph, availability, and the validator's scores.

Each miner's moving-average score goes with it (``MinerRecord.score``) when the
score book holds one for the uid's current hotkey: the API routes by it
(docs/routing.md). A uid that changed hands carries no score until it earns one.
"""

from __future__ import annotations

import time
from typing import Optional

from shared.chain import SubnetState
from shared.schemas import Directory, MinerRecord

from .availability import AvailabilityPoller


def build_directory(state: SubnetState, poller: AvailabilityPoller, validator_hotkey: str,
                    scores: Optional[list[dict]] = None) -> Directory:
    """``scores``: the score book's rows (``ScoreBook.table()``: uid, hotkey, score, ...)."""
    score_of = {(row["uid"], row["hotkey"]): row["score"] for row in scores or ()}
    miners = []
    for neuron in state.neurons:
        record = poller.get(neuron)
        miners.append(
            MinerRecord(
                uid=neuron.uid,
                hotkey=neuron.hotkey,
                address=neuron.axon,
                incentive=neuron.incentive,
                stake=neuron.stake,
                validator_permit=neuron.validator_permit,
                availability=record.availability if record else None,
                checked_at=record.checked_at if record else None,
                score=score_of.get((neuron.uid, neuron.hotkey)),
            )
        )
    return Directory(
        netuid=state.netuid,
        block=state.block,
        validator_hotkey=validator_hotkey,
        generated_at=time.time(),
        miners=miners,
    )
