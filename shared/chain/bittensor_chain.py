"""The chain interface over the bittensor 11 SDK: a real subnet on finney, test or a local node.

The SDK already does the hard parts of talking to a subnet: it quantizes weights
to u16, clips them to ``max_weight_limit``, enforces ``min_allowed_weights``,
picks the plaintext or the timelocked commit-reveal extrinsic, and checks
registration and the weights rate limit before anything is signed. This module
only translates, so that nothing above it touches an SDK object::

    chain = BittensorChain("finney", netuid=1, keypair=bt.Wallet("vali", "hk").hotkey)
    state = await chain.metagraph()                   # SubnetState; stake in the subnet's alpha
    result = await chain.set_weights({3: 0.7, 5: 0.3})
    if result.rate_limited:                           # nothing was signed or sent
        await asyncio.sleep(result.retry_after_seconds or 60)
    await chain.serve("203.0.113.7", 8091)            # a miner advertises its address
    await chain.close()

Signing: ``keypair`` is the hotkey alone. A ``Keypair`` is a :class:`bittensor.Signer`,
and for hotkey-signed intents (``SetWeights``, ``ServeAxon``) the SDK takes a bare
signer to *be* the hotkey, so no coldkey is loaded, unlocked or needed here (the
chain charges these fees to the hotkey owner's coldkey).

Failures: reads raise :class:`ChainError`. ``set_weights`` never raises for a
failure of the chain or the connection: it returns ``WeightResult(success=False)``,
with ``rate_limited=True`` when retrying later will help. ``serve`` raises
:class:`ChainError`, since a miner that cannot advertise should not start quietly.

The connection opens on first use, on the running event loop, and is only used
from that loop (a call from another loop opens a fresh one). ``connect()`` in the
SDK caches subnet token symbols in ``~/.bittensor``; unless
``BTCLI_TOKEN_SYMBOLS_CACHE`` is set, it is pointed at the null device, since the
symbols are display-only and this module never shows them.
"""

from __future__ import annotations

import asyncio
import os
import re
from typing import Any, Optional

import bittensor as bt
from bittensor.settings import resolve_endpoint

from .base import ChainError, Neuron, SubnetState, WeightResult

# The SDK's rate-limit preflight says "... Retry in ~50 blocks (~600s)."
_RETRY_BLOCKS = re.compile(r"retry in ~(\d+) blocks", re.IGNORECASE)

# What the SDK or its transport raises when the chain cannot be read or written.
# KeyError/TypeError/ValueError come from decoding a payload of an unexpected shape.
_SDK_ERRORS = (bt.BittensorError, OSError, KeyError, TypeError, ValueError)


def to_neuron(n: bt.MetagraphNeuron) -> Neuron:
    """One SDK metagraph row as our plain dataclass.

    ``total_stake`` is the stake weight the chain uses for validator permits:
    alpha plus root TAO scaled into the subnet's alpha. It is an alpha
    ``Balance``, so it is read with ``.amount`` (``.tao`` raises for alpha).
    """
    return Neuron(
        uid=n.uid,
        hotkey=n.hotkey,
        coldkey=n.coldkey,
        stake=n.total_stake.amount,
        incentive=float(n.incentive),
        validator_permit=bool(n.validator_permit),
        axon=n.axon,
        active=bool(n.active),
    )


class BittensorChain:
    """The :class:`~shared.chain.base.Chain` backed by ``bittensor.Client``.

    ``network`` is ``finney``, ``test``, ``local`` or a ``ws://``/``wss://`` URL.
    ``keypair`` is the hotkey that signs (``None`` allows reads only).
    ``substrate`` replaces the SDK's RPC backend, e.g. with an in-memory fake in
    tests. ``version_key`` is sent with weights, for subnets that require one.
    """

    def __init__(
        self,
        network: str,
        netuid: int,
        keypair: Any,
        substrate: Optional[bt.Substrate] = None,
        *,
        version_key: int = 0,
    ):
        resolve_endpoint(network)  # an unknown network name is a configuration error: fail now
        self.network = network
        self.netuid = netuid
        self.keypair = keypair
        self.version_key = version_key
        self._substrate = substrate
        self._client: Optional[bt.Client] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._lock: Optional[asyncio.Lock] = None

    # The Chain protocol ------------------------------------------------------

    async def metagraph(self) -> SubnetState:
        client = await self._connected()
        try:
            graph = await client.subnets.metagraph(self.netuid, commitments=False)
            if graph is None:
                raise ChainError(f"subnet {self.netuid} does not exist on {self.network}")
            neurons = tuple(to_neuron(n) for n in graph.neurons)
        except ChainError:
            raise
        except _SDK_ERRORS as exc:
            raise ChainError(
                f"could not read the metagraph of subnet {self.netuid} on {self.network}: {_why(exc)}"
            ) from exc
        return SubnetState(netuid=self.netuid, block=int(graph.block), neurons=neurons)

    async def set_weights(self, weights: dict[int, float]) -> WeightResult:
        if self.keypair is None:
            return WeightResult(False, "no hotkey configured: cannot sign weights")
        try:
            client = await self._connected()
            intent = bt.SetWeights(self.netuid, weights=dict(weights), version_key=self.version_key)
            result = await client.execute(
                intent, self.keypair, wait_for_inclusion=True, wait_for_finalization=False, retries=1
            )
        except (ChainError, *_SDK_ERRORS) as exc:
            return await self._failed_weights(exc)
        if not result.success:
            return await self._failed_weights(result.error or bt.ChainError(result.message))
        uids, _ = bt.intents.normalize(intent.uids, intent.weights)
        where = f" in {result.extrinsic_id}" if result.extrinsic_id else ""
        if "reveal_round" in result.data:
            message = f"weights committed{where}; revealed at drand round {result.data['reveal_round']}"
        else:
            message = f"weights set{where}"
        return WeightResult(True, message, uids=tuple(uids))

    async def serve(self, ip: str, port: int) -> None:
        if self.keypair is None:
            raise ChainError("no hotkey configured: cannot sign serve_axon")
        client = await self._connected()
        try:
            result = await client.execute(
                bt.ServeAxon(self.netuid, ip, port),
                self.keypair,
                wait_for_inclusion=True,
                wait_for_finalization=False,
                retries=1,
            )
        except _SDK_ERRORS as exc:
            raise ChainError(f"could not serve {ip}:{port} on subnet {self.netuid}: {_why(exc)}") from exc
        if not result.success:
            raise ChainError(f"serving {ip}:{port} on subnet {self.netuid} failed: {result.message}")

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None and self._loop is _running_loop():
            await client.close()

    # Connection ---------------------------------------------------------------

    async def _connected(self) -> bt.Client:
        """The client for the running loop, connecting it on first use."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            # A websocket belongs to the loop that opened it; start over on this one.
            self._client, self._loop, self._lock = None, loop, asyncio.Lock()
        assert self._lock is not None
        async with self._lock:
            if self._client is None:
                os.environ.setdefault("BTCLI_TOKEN_SYMBOLS_CACHE", os.devnull)
                client = bt.Client(self.network, substrate=self._substrate)
                try:
                    await client.connect()
                except _SDK_ERRORS as exc:
                    raise ChainError(f"could not connect to {self.network}: {_why(exc)}") from exc
                self._client = client
            return self._client

    async def _failed_weights(self, error: BaseException) -> WeightResult:
        message = _why(error)
        if getattr(error, "code", None) != bt.ErrorCode.RATE_LIMITED:
            return WeightResult(False, message)
        retry_after = await self._retry_after(message)
        return WeightResult(False, message, rate_limited=True, retry_after_seconds=retry_after)

    async def _retry_after(self, message: str) -> Optional[float]:
        """Seconds until the rate limit lifts, when the SDK said how many blocks."""
        match = _RETRY_BLOCKS.search(message)
        if match is None or self._client is None:
            return None
        try:
            return int(match.group(1)) * await self._client.block_time()
        except _SDK_ERRORS:
            return None


def _why(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if isinstance(exc, (bt.BittensorError, ChainError)) else f"{type(exc).__name__}: {text}"


def _running_loop() -> Optional[asyncio.AbstractEventLoop]:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
