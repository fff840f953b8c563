"""``GET /metrics``: Prometheus text format, summed over every worker of this port.

Open by default, like most gateways' ``/metrics`` (it carries counts, never
keys); set ``METRICS_KEY`` and Prometheus must send ``Authorization: Bearer
<METRICS_KEY>`` (``authorization`` in its scrape config).
"""

from __future__ import annotations

import hashlib
import hmac

from fastapi import APIRouter, Request
from fastapi.responses import Response

from ..errors import ApiError
from ..gateway import gateway_of
from ..metrics import CONTENT_TYPE

router = APIRouter(tags=["operations"])


def allowed(request: Request) -> bool:
    expected = gateway_of(request).settings.metrics_key.get_secret_value()
    if not expected:
        return True
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(hashlib.sha256(given.strip().encode()).digest(),
                                                              hashlib.sha256(expected.encode()).digest())


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    gateway = gateway_of(request)
    if not gateway.metrics.enabled:
        raise ApiError(404, "metrics are disabled (METRICS_ENABLED=false)", "not_found")
    if not allowed(request):
        raise ApiError(401, "send 'Authorization: Bearer <METRICS_KEY>'", "invalid_metrics_key")
    gateway.metrics.sample(gateway)  # this worker's gauges are current; the others' at most 2 s old
    return Response(await gateway.metrics.render(), media_type=CONTENT_TYPE)
