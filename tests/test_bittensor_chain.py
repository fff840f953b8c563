"""BittensorChain against an in-memory chain: the SDK's real decoder and intents run."""

from __future__ import annotations

import asyncio
import os

import bittensor as bt
import pytest
from fake_substrate import FakeNeuron, FakeSubstrate

from shared.chain.base import ChainError, WeightResult
from shared.chain.bittensor_chain import BittensorChain

NETUID = 7
ALICE, BOB, CHARLIE, DAVE, EVE = (
    bt.sp_core.Keypair.create_from_uri(f"//{name}") for name in ("Alice", "Bob", "Charlie", "Dave", "Eve")
)


@pytest.fixture(autouse=True)
def symbols_cache(tmp_path, monkeypatch):
    """Keep the SDK's token-symbol cache (and this module's env default) out of $HOME."""
    path = tmp_path / "token_symbols.json"
    monkeypatch.setenv("BTCLI_TOKEN_SYMBOLS_CACHE", str(path))
    return path


def subnet(**overrides) -> FakeSubstrate:
    neurons = [
        FakeNeuron(ALICE.ss58_address, coldkey=EVE.ss58_address, stake=1234.5, validator_permit=True),
        FakeNeuron(BOB.ss58_address, stake=10.0, incentive=0.25, axon="127.0.0.1:8091"),
        FakeNeuron(CHARLIE.ss58_address, stake=0.0, incentive=0.75, axon="10.0.0.2:9000"),
        FakeNeuron(DAVE.ss58_address, active=False),
    ]
    return FakeSubstrate(netuid=NETUID, neurons=neurons, **overrides)


@pytest.fixture
async def fake_and_chain():
    fake = subnet(weights_rate_limit=100)
    chain = BittensorChain("finney", NETUID, ALICE, substrate=fake)
    yield fake, chain
    await chain.close()


async def test_metagraph_decodes_to_our_neurons(fake_and_chain):
    fake, chain = fake_and_chain
    state = await chain.metagraph()

    assert (state.netuid, state.block) == (NETUID, 1000)
    assert [n.uid for n in state.neurons] == [0, 1, 2, 3]
    assert [n.hotkey for n in state.neurons] == [k.ss58_address for k in (ALICE, BOB, CHARLIE, DAVE)]
    alice, bob, charlie, dave = state.neurons
    assert alice.coldkey == EVE.ss58_address and bob.coldkey == BOB.ss58_address
    assert [n.axon for n in state.neurons] == [None, "127.0.0.1:8091", "10.0.0.2:9000", None]
    assert [n.validator_permit for n in state.neurons] == [True, False, False, False]
    assert [n.stake for n in state.neurons] == [1234.5, 10.0, 0.0, 0.0]
    assert bob.incentive == pytest.approx(0.25, abs=1e-4)  # PerU16 on the wire
    assert charlie.incentive == pytest.approx(0.75, abs=1e-4)
    assert alice.incentive == 0.0
    assert (alice.active, dave.active) == (True, False)
    assert state.by_hotkey(BOB.ss58_address) == bob


async def test_set_weights_reaches_chain_as_u16_with_max_at_65535(fake_and_chain):
    fake, chain = fake_and_chain
    result = await chain.set_weights({1: 0.1, 2: 0.7, 3: 0.2})

    assert result.success, result.message
    assert result.uids == (1, 2, 3) and not result.rate_limited
    [call] = fake.submitted
    assert (call.pallet, call.function) == ("SubtensorModule", "set_mechanism_weights")
    assert call.signer == ALICE.ss58_address
    assert call.params == {
        "netuid": NETUID,
        "mecid": 0,
        "dests": [1, 2, 3],
        "weights": [9362, 65535, 18724],  # round(w / 0.7 * 65535)
        "version_key": 0,
    }


async def test_zero_weights_are_dropped_and_all_zero_is_a_failed_result(fake_and_chain):
    fake, chain = fake_and_chain
    result = await chain.set_weights({1: 0.0, 2: 3.0})
    assert result.success and result.uids == (2,)
    assert fake.submitted[-1].params["dests"] == [2] and fake.submitted[-1].params["weights"] == [65535]

    fake.advance(100)
    result = await chain.set_weights({1: 0.0})
    assert result == WeightResult(False, "All weights are zero; nothing to set.")
    assert len(fake.submitted) == 1


async def test_rate_limited_set_submits_nothing_then_succeeds_after_the_limit(fake_and_chain):
    fake, chain = fake_and_chain
    fake.blocks_since_last_update(0, 50)  # limit is 100 blocks of 12 s

    result = await chain.set_weights({1: 0.1, 2: 0.7, 3: 0.2})
    assert not result.success and result.rate_limited
    assert result.retry_after_seconds == 50 * 12.0
    assert "rate limit is 100 blocks" in result.message
    assert fake.submitted == []

    fake.advance(50)
    result = await chain.set_weights({1: 0.1, 2: 0.7, 3: 0.2})
    assert result.success, result.message
    assert fake.calls("set_mechanism_weights")[0].block == 1050

    again = await chain.set_weights({1: 1.0})  # the chain recorded the set just made
    assert again.rate_limited and again.retry_after_seconds == 100 * 12.0
    assert len(fake.submitted) == 1


async def test_chain_side_rejection_is_a_result_not_an_exception(fake_and_chain):
    fake, chain = fake_and_chain
    fake.reject_next = "SettingWeightsTooFast"
    result = await chain.set_weights({1: 1.0})
    assert (result.success, result.rate_limited, result.retry_after_seconds) == (False, True, None)

    fake.reject_next = "NeuronNoValidatorPermit"
    result = await chain.set_weights({1: 1.0})
    assert (result.success, result.rate_limited) == (False, False)
    assert "NeuronNoValidatorPermit" in result.message


async def test_unregistered_hotkey_cannot_set_weights(fake_and_chain):
    fake, _ = fake_and_chain
    ferdie = bt.sp_core.Keypair.create_from_uri("//Ferdie")
    stranger = BittensorChain("finney", NETUID, ferdie, substrate=fake)
    result = await stranger.set_weights({1: 1.0})
    assert not result.success and not result.rate_limited
    assert "not registered" in result.message
    assert fake.submitted == []


async def test_commit_reveal_subnet_gets_a_timelocked_commit():
    fake = subnet(commit_reveal=True)
    chain = BittensorChain("finney", NETUID, ALICE, substrate=fake)
    result = await chain.set_weights({1: 0.5, 2: 0.5})
    await chain.close()

    assert result.success and result.uids == (1, 2)
    assert "drand round" in result.message
    [call] = fake.submitted
    assert call.function == "commit_timelocked_mechanism_weights"
    assert call.params["netuid"] == NETUID and call.params["reveal_round"] > 0


async def test_serve_submits_serve_axon(fake_and_chain):
    fake, chain = fake_and_chain
    await chain.serve("127.0.0.1", 8091)

    [call] = fake.submitted
    assert (call.function, call.signer) == ("serve_axon", ALICE.ss58_address)
    assert call.params["ip"] == 2130706433 == int.from_bytes(bytes([127, 0, 0, 1]), "big")
    assert (call.params["port"], call.params["ip_type"], call.params["netuid"]) == (8091, 4, NETUID)
    assert (await chain.metagraph()).by_uid(0).axon == "127.0.0.1:8091"


async def test_serve_failures_raise_chain_error(fake_and_chain):
    fake, chain = fake_and_chain
    with pytest.raises(ChainError, match="IPv4 or IPv6"):
        await chain.serve("miner.example.com", 8091)
    fake.reject_next = "ServingRateLimitExceeded"
    with pytest.raises(ChainError, match="ServingRateLimitExceeded"):
        await chain.serve("127.0.0.1", 8091)
    assert fake.submitted == []


async def test_missing_subnet_raises_chain_error():
    chain = BittensorChain("finney", 99, ALICE, substrate=subnet())
    with pytest.raises(ChainError, match="subnet 99 does not exist"):
        await chain.metagraph()
    await chain.close()


async def test_unreachable_node_raises_chain_error():
    chain = BittensorChain("ws://127.0.0.1:1", NETUID, ALICE)
    with pytest.raises(ChainError, match="could not connect to ws://127.0.0.1:1"):
        await chain.metagraph()
    result = await chain.set_weights({1: 1.0})
    assert not result.success and "could not connect" in result.message


def test_unknown_network_fails_at_construction():
    with pytest.raises(ValueError, match="Unknown network"):
        BittensorChain("finny", NETUID, ALICE)


async def test_connects_once_lazily_and_close_closes(fake_and_chain):
    fake, chain = fake_and_chain
    assert fake.connects == 0
    await chain.metagraph()
    await chain.set_weights({1: 1.0})
    await chain.metagraph()
    assert (fake.connects, fake.connected) == (1, True)
    await chain.close()
    assert (fake.closes, fake.connected) == (1, False)


def test_each_event_loop_gets_its_own_connection():
    fake = subnet()
    chain = BittensorChain("finney", NETUID, ALICE, substrate=fake)
    asyncio.run(chain.metagraph())  # its loop ends without close(): that client is abandoned

    async def second_loop() -> WeightResult:
        try:
            return await chain.set_weights({1: 1.0})
        finally:
            await chain.close()

    assert asyncio.run(second_loop()).success
    assert fake.connects == 2 and fake.closes == 1


async def test_symbol_cache_defaults_to_the_null_device(monkeypatch, symbols_cache):
    monkeypatch.delenv("BTCLI_TOKEN_SYMBOLS_CACHE")  # restored (then unset) after the test
    chain = BittensorChain("finney", NETUID, ALICE, substrate=subnet())
    await chain.metagraph()
    await chain.close()
    assert os.environ["BTCLI_TOKEN_SYMBOLS_CACHE"] == os.devnull
    assert not symbols_cache.exists()


async def test_read_only_chain_without_keypair():
    chain = BittensorChain("finney", NETUID, None, substrate=subnet())
    assert len((await chain.metagraph()).neurons) == 4
    assert (await chain.set_weights({1: 1.0})).message.startswith("no hotkey")
    with pytest.raises(ChainError, match="no hotkey"):
        await chain.serve("127.0.0.1", 8091)
    await chain.close()
