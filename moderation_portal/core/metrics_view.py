"""`GET /metrics`: the Prometheus text format, for the operators' scraper only.

Open from loopback (a Prometheus or an agent on the same host) when the request came straight
from there, or from anywhere with `Authorization: Bearer $METRICS_TOKEN`. A request relayed by a
reverse proxy on the same host also arrives from loopback, so a forwarding header
(X-Forwarded-For, Forwarded, X-Real-IP) closes the loopback door: through a proxy only the token
opens it. Not behind login: a scraper has no session.

Each scrape builds a fresh registry: in multiprocess mode the files every process wrote
(`PROMETHEUS_MULTIPROC_DIR`), else this process's default registry; and the scrape collectors
(`metrics.register_scrape_collector`), which read the database now. A collector that fails is
left out and counted in `portal_scrape_collector_errors{collector}`, so one broken query never
takes the other families with it.
"""

import hmac
import ipaddress
import logging
import os
from collections.abc import Iterable

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from moderation_portal.core import metrics

logger = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
FORWARDING_HEADERS = ("HTTP_X_FORWARDED_FOR", "HTTP_FORWARDED", "HTTP_X_REAL_IP")


def _from_loopback(request: HttpRequest) -> bool:
    if any(header in request.META for header in FORWARDING_HEADERS):
        return False
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1 on a dual-stack socket
    return (mapped or address).is_loopback


def _has_token(request: HttpRequest) -> bool:
    token = settings.METRICS_TOKEN or ""
    scheme, _, given = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    if not token or scheme.lower() != "bearer" or not given:
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


def scrape_allowed(request: HttpRequest) -> bool:
    return _has_token(request) or _from_loopback(request)


class ScrapeCollectors(Collector):
    """The registered scrape collectors, each guarded."""

    def collect(self) -> Iterable[Metric]:
        errors = GaugeMetricFamily(
            "portal_scrape_collector_errors",
            "1 for a scrape collector that failed during this scrape (its families are missing).",
            labels=["collector"],
        )
        for name, collect in sorted(metrics.scrape_collectors().items()):
            try:
                families = list(collect())
            except Exception:  # one failing collector must not fail the scrape
                logger.exception("metrics collector %s failed", name)
                errors.add_metric([name], 1.0)
                continue
            errors.add_metric([name], 0.0)
            yield from families
        yield errors


def scrape_registry() -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path:
        MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    else:
        registry.register(_DefaultRegistry())
    registry.register(ScrapeCollectors())
    return registry


class _DefaultRegistry(Collector):
    """This process's own families, when there is no multiprocess folder."""

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    if not scrape_allowed(request):
        return HttpResponse(
            "Metrics are served to loopback or with the metrics bearer token.\n",
            status=403,
            content_type="text/plain; charset=utf-8",
        )
    if not metrics.ENABLED:
        return HttpResponse(
            "Metrics are turned off (METRICS_ENABLED=false).\n",
            status=503,
            content_type="text/plain; charset=utf-8",
        )
    return HttpResponse(generate_latest(scrape_registry()), content_type=CONTENT_TYPE)
