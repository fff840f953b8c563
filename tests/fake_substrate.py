"""An in-memory chain for tests: the SDK's real decoding and intent planning, no node.

``bittensor.Client(substrate=...)`` accepts any object with the SDK's ``Substrate``
shape. This one holds a single subnet built from a plain neuron list, answers the
reads that the metagraph decoder and the ``SetWeights``/``ServeAxon`` intents make,
and records every call that reaches it instead of signing it onto a chain::

    neurons = [FakeNeuron(alice.ss58_address, validator_permit=True), FakeNeuron(bob.ss58_address)]
    fake = FakeSubstrate(netuid=7, neurons=neurons, weights_rate_limit=100)
    client = bt.Client("finney", substrate=fake)
    ...
    fake.submitted[-1]   # Submitted(pallet='SubtensorModule', function='set_mechanism_weights', ...)
    fake.blocks_since_last_update(0, 50)   # uid 0 set weights 50 blocks ago
    fake.advance(50)                        # the chain moves on

Like the chain, it applies what it accepts (weights update ``LastUpdate``,
``serve_axon`` updates the neuron's axon) and rejects a weight set that comes too
soon or from an unregistered hotkey, so the SDK's client-side checks are tested
against the same rules the chain would enforce.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Optional

import bittensor as bt

RAO = 10**9
U16_MAX = 65535


@dataclass
class FakeNeuron:
    """One registered hotkey; its uid is its position in the list."""

    hotkey: str
    coldkey: str = ""  # defaults to the hotkey
    stake: float = 0.0  # alpha
    incentive: float = 0.0  # 0..1
    validator_permit: bool = False
    axon: Optional[str] = None  # "ip:port"
    active: bool = True
    last_update: int = 0  # block of the last weight set (0 = never)


@dataclass(frozen=True)
class Submitted:
    """One extrinsic that reached the fake chain."""

    pallet: str
    function: str
    params: dict[str, Any]
    signer: str
    block: int


@dataclass
class FakeSubstrate:
    """A one-subnet chain whose state is plain attributes a test can change."""

    netuid: int = 1
    neurons: list[FakeNeuron] = field(default_factory=list)
    block: int = 1000
    block_time_seconds: float = 12.0
    weights_rate_limit: int = 0  # blocks
    min_allowed_weights: int = 0
    max_weight_limit: int = U16_MAX  # u16; 65535 = no limit
    commit_reveal: bool = False
    tempo: int = 360
    fee_rao: int = 20_000
    # Set to a chain error name (e.g. "SettingWeightsTooFast") to fail the next submission.
    reject_next: Optional[str] = None

    def __post_init__(self) -> None:
        self.neurons = list(self.neurons)
        self.submitted: list[Submitted] = []
        self.reads: list[tuple[str, str, tuple]] = []  # every storage read, for debugging
        self.token_symbols: dict[int, str] = {}
        self.connected = False
        self.connects = 0
        self.closes = 0

    # Test controls ----------------------------------------------------------

    def advance(self, blocks: int) -> None:
        self.block += blocks

    def blocks_since_last_update(self, uid: int, blocks: int) -> None:
        self.neurons[uid].last_update = self.block - blocks

    def uid_of(self, hotkey: str) -> Optional[int]:
        return next((uid for uid, n in enumerate(self.neurons) if n.hotkey == hotkey), None)

    def calls(self, function: str) -> list[Submitted]:
        return [s for s in self.submitted if s.function == function]

    # Lifecycle ----------------------------------------------------------------

    async def connect(self) -> None:
        self.connected = True
        self.connects += 1

    async def close(self) -> None:
        self.connected = False
        self.closes += 1

    def balance(self, rao: int, netuid: int = 0) -> bt.Balance:
        return bt.Balance(int(rao), netuid, self.token_symbols.get(netuid) if netuid else None)

    # Reads ----------------------------------------------------------------------

    async def block_hash(self, block: Optional[int] = None) -> str:
        return f"0x{(self.block if block is None else block):064x}"

    async def block_number(self) -> int:
        return self.block

    async def finalized_block_number(self) -> int:
        return self.block

    async def block_time(self) -> float:
        return self.block_time_seconds

    async def spec_version(self) -> int:
        return 400

    async def constant(self, module: str, name: str) -> Any:
        if (module, name) == ("Aura", "SlotDuration"):
            return int(self.block_time_seconds * 1000)
        raise KeyError(f"fake chain has no constant {module}.{name}")

    async def query(
        self, module: str, storage_function: str, params: Optional[list] = None, block_hash: Optional[str] = None
    ) -> Any:
        params = list(params or [])
        self.reads.append((module, storage_function, tuple(params)))
        if module != "SubtensorModule" or not params or params[0] != self.netuid:
            return None
        rest = params[1:]
        if storage_function == "Uids":
            return self.uid_of(rest[0])
        if storage_function == "LastUpdate":  # keyed by mechid * 4096 + netuid; mechanism 0 only
            return [n.last_update for n in self.neurons]
        if storage_function == "ValidatorPermit":
            return [n.validator_permit for n in self.neurons]
        values = {
            "CommitRevealWeightsEnabled": self.commit_reveal,
            "WeightsSetRateLimit": self.weights_rate_limit,
            "MinAllowedWeights": self.min_allowed_weights,
            "MaxWeightsLimit": self.max_weight_limit,
            "SubnetEpochConsensus": "Yuma",
            "Tempo": self.tempo,
            "RevealPeriodEpochs": 1,
            "LastEpochBlock": self.block - self.block % self.tempo,
            "PendingEpochAt": 0,
            "SubnetEpochIndex": self.block // self.tempo,
            "BlocksSinceLastStep": self.block % self.tempo,
            "SubnetworkN": len(self.neurons),
            "NetworksAdded": True,
        }
        return values.get(storage_function)

    async def query_map(
        self, module: str, storage_function: str, params: Optional[list] = None, block_hash: Optional[str] = None
    ) -> list[tuple[Any, Any]]:
        self.reads.append((module, storage_function, tuple(params or [])))
        if (module, storage_function) == ("SubtensorModule", "TokenSymbol"):
            return [(self.netuid, list("γ".encode()))]
        return []

    async def query_batch(
        self, module: str, storage_function: str, param_sets: list[list], block_hash: Optional[str] = None
    ) -> list[Any]:
        return [await self.query(module, storage_function, p, block_hash) for p in param_sets]

    async def map_has_entries(
        self, module: str, storage_function: str, params: list, block_hash: Optional[str] = None
    ) -> bool:
        return bool(await self.query_map(module, storage_function, params, block_hash))

    async def runtime_call(
        self, api: str, method: str, params: list, block_hash: Optional[str] = None
    ) -> Any:
        if (api, method) == ("SubnetInfoRuntimeApi", "get_metagraph"):
            return self._raw_metagraph() if params == [self.netuid] else None
        raise NotImplementedError(f"fake chain has no runtime call {api}.{method}")

    async def blocks(self, *, finalized: bool = False) -> AsyncIterator[dict]:
        yield {"header": {"number": self.block, "parentHash": await self.block_hash(self.block - 1)}}

    # Calls, fees and submission ---------------------------------------------

    async def compose(self, call: Any) -> Any:
        """Check what the runtime's own decoder would, then keep the call as-is."""
        module, function, params = call
        if function == "set_mechanism_weights":
            if len(params["dests"]) != len(params["weights"]):
                raise bt.ChainError("dests and weights differ in length", "WeightVecNotEqualSize")
            if not all(0 <= int(v) <= U16_MAX for v in [*params["dests"], *params["weights"]]):
                raise ValueError("set_mechanism_weights takes u16 uids and weights")
        return call

    async def estimate_fee(self, call: Any, keypair: Any) -> bt.Balance:
        return bt.Balance.from_rao(self.fee_rao)

    async def estimate_weight(self, call: Any, keypair: Any) -> dict:
        return {"ref_time": 1_000_000, "proof_size": 1_000}

    async def account_next_index(self, address: str) -> int:
        return sum(1 for s in self.submitted if s.signer == address)

    async def mev_next_key(self) -> Optional[bytes]:
        return None

    async def submit(
        self,
        call: Any,
        keypair: Any,
        *,
        nonce: Optional[int] = None,
        period: Optional[int] = None,
        wait_for_inclusion: bool = True,
        wait_for_finalization: bool = True,
    ) -> bt.ExtrinsicResult:
        module, function, params = call
        keypair.sign(repr(call).encode())  # the signer must be able to sign, as on chain
        rejection = self.reject_next or self._dispatch_error(function, keypair.ss58_address)
        self.reject_next = None
        if rejection:
            return bt.ExtrinsicResult(False, rejection, error=bt.ChainError(rejection, rejection))
        self.submitted.append(Submitted(module, function, dict(params), keypair.ss58_address, self.block))
        self._apply(function, params, keypair.ss58_address)
        return bt.ExtrinsicResult(
            True,
            "Success",
            block_hash=await self.block_hash(),
            extrinsic_id=f"{self.block}-{len(self.submitted):04d}",
            fee=bt.Balance.from_rao(self.fee_rao),
        )

    def _dispatch_error(self, function: str, signer: str) -> Optional[str]:
        uid = self.uid_of(signer)
        if function in ("set_mechanism_weights", "commit_timelocked_mechanism_weights", "serve_axon"):
            if uid is None:
                return "HotKeyNotRegisteredInSubNet"
        if function in ("set_mechanism_weights", "commit_timelocked_mechanism_weights"):
            last = self.neurons[uid].last_update
            if self.weights_rate_limit and last and self.block - last < self.weights_rate_limit:
                return "SettingWeightsTooFast"
        return None

    def _apply(self, function: str, params: dict, signer: str) -> None:
        neuron = self.neurons[self.uid_of(signer)] if self.uid_of(signer) is not None else None
        if function in ("set_mechanism_weights", "commit_timelocked_mechanism_weights") and neuron:
            neuron.last_update = self.block
        if function == "serve_axon" and neuron:
            neuron.axon = f"{ipaddress.ip_address(params['ip'])}:{params['port']}"

    # The get_metagraph runtime record -------------------------------------------

    def _raw_metagraph(self) -> dict:
        """The decoded ``SubnetInfoRuntimeApi.get_metagraph`` value, as the node sends it."""
        ns = self.neurons

        def column(value) -> list:
            return [value(n) for n in ns]

        def rao(amount: float) -> int:
            return int(round(amount * RAO))

        owner = ns[0] if ns else FakeNeuron(hotkey="", coldkey="")
        return {
            "netuid": self.netuid,
            "name": list(b"fake subnet"),
            "symbol": list("γ".encode()),
            "identity": None,
            "network_registered_at": 1,
            "owner_hotkey": owner.hotkey,
            "owner_coldkey": owner.coldkey or owner.hotkey,
            "block": self.block,
            "tempo": self.tempo,
            "last_step": self.block - self.block % self.tempo,
            "blocks_since_last_step": self.block % self.tempo,
            "num_uids": len(ns),
            "max_uids": 256,
            "tao_in": 1_000 * RAO,
            "alpha_in": 4_000 * RAO,
            "moving_price": {"bits": 2**30},
            "hotkeys": column(lambda n: n.hotkey),
            "coldkeys": column(lambda n: n.coldkey or n.hotkey),
            "identities": column(lambda n: None),
            "axons": column(lambda n: _axon_info(n.axon)),
            "active": column(lambda n: n.active),
            "validator_permit": column(lambda n: n.validator_permit),
            "pruning_score": column(lambda n: 0),
            "last_update": column(lambda n: n.last_update),
            "emission": column(lambda n: 0),
            "dividends": column(lambda n: 0),
            "incentives": column(lambda n: round(n.incentive * U16_MAX)),
            "consensus": column(lambda n: 0),
            "trust": column(lambda n: 0),
            "rank": column(lambda n: 0),
            "block_at_registration": column(lambda n: 1),
            "alpha_stake": column(lambda n: rao(n.stake)),
            "tao_stake": column(lambda n: 0),
            "total_stake": column(lambda n: rao(n.stake)),
        }


def _axon_info(address: Optional[str]) -> dict:
    """The chain's ``AxonInfo`` record; ip 0 means nothing is served."""
    ip, port = (address.rsplit(":", 1) if address else ("0.0.0.0", "0"))
    parsed = ipaddress.ip_address(ip.strip("[]"))
    return {
        "block": 1,
        "version": 1,
        "ip": int(parsed),
        "port": int(port),
        "ip_type": parsed.version,
        "protocol": 4,
        "placeholder1": 0,
        "placeholder2": 0,
    }
