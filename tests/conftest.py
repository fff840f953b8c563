"""Fixtures that start real processes on 127.0.0.1.

``local_subnet`` is one whole subnet per test session (wallets, subnet file,
four reference miners of different quality, the validator, two API workers),
started through the same launcher as the demo. ``postgres_url`` and ``redis_url`` are
the servers the store tests use (see ``services.py``): skipped with the reason when there
is none, and failed in CI.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from services import POSTGRES, REDIS, Unavailable, in_ci
from store_fixtures import drop_schema, unique_name

from localnet.launcher import LocalSubnet, free_port
from shared.auth import Signer
from shared.wallet import load_hotkey


def start_subnet(directory: Path, **kwargs) -> LocalSubnet:
    behaviours = kwargs.pop("behaviours", ["good", "noisy", "slow", "broken"])
    net = LocalSubnet(directory, api_port=free_port(), validator_port=free_port(),
                      miner_ports=[free_port() for _ in behaviours], behaviours=behaviours, web_port=free_port(),
                      **kwargs)
    try:
        net.start(timeout=60)
    except Exception:
        net.stop()
        raise
    return net


def service_url(service) -> str:
    try:
        return service.url()
    except Unavailable as exc:
        if in_ci():
            pytest.fail(f"{exc} (CI=true: the tests need it)", pytrace=False)
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """A PostgreSQL server's URL: TEST_POSTGRES_URL, the machine's, or a throwaway one (stopped at the end)."""
    yield service_url(POSTGRES)
    POSTGRES.stop()


@pytest.fixture(scope="session")
def redis_url() -> str:
    """A Redis server's URL: TEST_REDIS_URL, the machine's, or a throwaway one (stopped at the end)."""
    yield service_url(REDIS)
    REDIS.stop()


@pytest.fixture(params=["sqlite", "postgres"])
def database(request, tmp_path):
    """(DATABASE_URL, sqlite path, schema) for a fresh store, on each backend; the PostgreSQL schema is dropped."""
    if request.param == "sqlite":
        yield "", tmp_path / "api.sqlite", ""
        return
    postgres_url = request.getfixturevalue("postgres_url")
    schema = unique_name(f"test_{request.node.module.__name__.split('.')[-1]}")
    yield postgres_url, tmp_path / "unused.sqlite", schema
    drop_schema(postgres_url, schema)


@pytest.fixture(scope="session")
def subnet_factory():
    """``subnet_factory(directory, **kwargs)``: start another subnet; the caller stops it."""
    return start_subnet


@pytest.fixture(scope="session")
def local_subnet(tmp_path_factory) -> LocalSubnet:
    net = start_subnet(tmp_path_factory.mktemp("localnet"))
    yield net
    net.stop()


@pytest.fixture(scope="session")
def api_key(local_subnet) -> str:
    return local_subnet.create_api_key("tests")


@pytest.fixture(scope="module")
def client(local_subnet, api_key):
    """The official ``openai`` client on the shared local subnet (a module may define its own)."""
    from openai import OpenAI

    return OpenAI(base_url=local_subnet.api_url + "/v1", api_key=api_key, max_retries=0, timeout=30)


@pytest.fixture(scope="session")
def signer_for():
    """``signer_for(net, role, behaviour=None)``: a Signer with that member's hotkey, loaded from its wallet."""

    def load(net: LocalSubnet, role: str, behaviour: str | None = None) -> Signer:
        member = net.member(role, behaviour)
        return Signer(load_hotkey(member.name, "default", str(net.wallet_path)))

    return load
