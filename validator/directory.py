"""The miner directory that API workers route by: metagraph plus availability."""

from __future__ import annotations

import time

from shared.chain import SubnetState
from shared.schemas import Directory, MinerRecord

from .availability import AvailabilityPoller


def build_directory(state: SubnetState, poller: AvailabilityPoller, validator_hotkey: str) -> Directory:
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
            )
        )
    return Directory(
        netuid=state.netuid,
        block=state.block,
        validator_hotkey=validator_hotkey,
        generated_at=time.time(),
        miners=miners,
    )
