"""``api.admission.admit_units`` for one unit runs inline (no task, no shield) with the same outcome."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from api.admission import admit_units
from api.errors import ApiError
from api.meter import Meter


def gateway(max_units: int = 8) -> SimpleNamespace:
    return SimpleNamespace(settings=SimpleNamespace(max_request_units=max_units), default_windows=[])


async def test_one_unit_is_admitted_inline_and_shared_with_later_parts():
    meter = Meter("/v1/chat/completions")
    meter.cost = 3
    key = SimpleNamespace(id="k", rate_limits=[], credits=None)
    await admit_units(gateway(), meter, key, 1)
    assert meter.admission.done() and meter.admission.exception() is None
    assert meter.units == 1 and meter.cost == 3 and meter.reserved == 0  # nothing more taken than admission did
    await admit_units(gateway(), meter, key, 1)  # a later part: the same admission, nothing taken twice
    assert meter.units == 1


async def test_a_refused_single_unit_is_refused_for_every_part():
    meter = Meter("/v1/chat/completions")
    key = SimpleNamespace(id="k", rate_limits=[], credits=None)
    for _ in range(2):
        with pytest.raises(ApiError) as raised:
            await admit_units(gateway(max_units=0), meter, key, 1)
        assert raised.value.status == 400 and raised.value.code == "too_many_units"
