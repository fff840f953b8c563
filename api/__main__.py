"""``python -m api``: run API workers with settings from ``.env.api``."""

from __future__ import annotations

from shared.serving import serve
from shared.settings import configure_logging

from .metrics_dir import prepare as prepare_metrics
from .settings import load


def main() -> None:
    settings = load()
    configure_logging(settings.log_level)
    # Before any worker imports prometheus_client. One worker keeps its metrics in memory: the
    # multiprocess files, which let several workers' counts add up, cost twice as much per update.
    if settings.metrics_enabled and (settings.api_workers > 1 or settings.metrics_dir):
        prepare_metrics(settings.data_dir, settings.api_port, settings.metrics_dir)
    serve(
        "api.app:create_app_from_env",
        settings,
        coalesce=True,
        factory=True,
        host=settings.api_host,
        port=settings.api_port,
        workers=settings.api_workers,
        log_level="warning",
        access_log=False,
        server_header=False,
        proxy_headers=False,  # the client address is ours to decide (TRUSTED_PROXIES, see api.throttle)
    )


if __name__ == "__main__":
    main()
