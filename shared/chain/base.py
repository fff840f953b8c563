"""The chain interface: the one seam between this project and a Bittensor chain.

Only three things are asked of a chain::

    chain = open_chain(settings, keypair)        # local file or bittensor SDK
    state = await chain.metagraph()              # who is on the subnet, where, with what stake
    result = await chain.set_weights({3: 0.7, 5: 0.3})
    await chain.serve("127.0.0.1", 8091)         # a miner advertises its address

Both implementations return the plain dataclasses below, so nothing above this
layer ever touches an SDK object.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Protocol


class ChainError(Exception):
    """The chain could not be read or written (connection, decoding, bad file)."""


@dataclass(frozen=True)
class Neuron:
    """One registered hotkey on the subnet, as the rest of the project sees it."""

    uid: int
    hotkey: str
    coldkey: str
    stake: float
    incentive: float
    validator_permit: bool
    axon: Optional[str]  # "ip:port", or None when the neuron serves nothing
    active: bool = True


@dataclass(frozen=True)
class SubnetState:
    """A metagraph snapshot: neurons ordered by uid, plus the block it was read at."""

    netuid: int
    block: int
    neurons: tuple[Neuron, ...]

    def by_hotkey(self, hotkey: str) -> Optional[Neuron]:
        for neuron in self.neurons:
            if neuron.hotkey == hotkey:
                return neuron
        return None

    def by_uid(self, uid: int) -> Optional[Neuron]:
        for neuron in self.neurons:
            if neuron.uid == uid:
                return neuron
        return None


@dataclass(frozen=True)
class WeightResult:
    """What happened to one weight set. ``rate_limited`` means: try again later."""

    success: bool
    message: str = ""
    rate_limited: bool = False
    retry_after_seconds: Optional[float] = None
    uids: tuple[int, ...] = field(default_factory=tuple)


class Chain(Protocol):
    """Read the metagraph, set weights, serve an address. Nothing else."""

    async def metagraph(self) -> SubnetState: ...

    async def set_weights(self, weights: dict[int, float]) -> WeightResult: ...

    async def serve(self, ip: str, port: int) -> None: ...

    async def close(self) -> None: ...
