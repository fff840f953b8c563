"""Open the chain that the settings name: ``local`` (a subnet file) or ``bittensor`` (the SDK)."""

from __future__ import annotations

from typing import Any, Optional

from .base import Chain, ChainError, Neuron, SubnetState, WeightResult
from .local import LocalChain


def open_chain(
    kind: str,
    *,
    hotkey: str,
    subnet_file: str = "",
    network: str = "finney",
    netuid: int = 1,
    keypair: Optional[Any] = None,
) -> Chain:
    """Build the chain implementation; the bittensor SDK is imported only when asked for."""
    if kind == "local":
        if not subnet_file:
            raise ValueError("CHAIN=local needs SUBNET_FILE")
        return LocalChain(subnet_file, hotkey=hotkey)
    if kind == "bittensor":
        from .bittensor_chain import BittensorChain

        return BittensorChain(network=network, netuid=netuid, keypair=keypair)
    raise ValueError(f"unknown CHAIN {kind!r}: use 'local' or 'bittensor'")


__all__ = ["Chain", "ChainError", "LocalChain", "Neuron", "SubnetState", "WeightResult", "open_chain"]
