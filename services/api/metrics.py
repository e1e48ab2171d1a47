"""The API's Prometheus metrics: requests by route template (never by raw path, which would carry
device ids), method and status; latency; and the database pool, read at scrape time."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from starlette.types import ASGIApp, Receive, Scope, Send


class PoolCollector:
    def __init__(self, get_pool):
        self._get_pool = get_pool

    def collect(self):
        pool = self._get_pool()
        stats = pool.get_stats() if pool is not None else {}
        for key, help_ in (("pool_size", "Connections in the pool"), ("pool_available", "Idle connections"),
                           ("requests_waiting", "Requests waiting for a connection")):
            g = GaugeMetricFamily(f"citysense_api_db_{key}", help_)
            g.add_metric([], stats.get(key, 0))
            yield g


class ApiMetrics:
    def __init__(self, get_pool):
        r = CollectorRegistry()
        self.registry = r
        self.requests = Counter("citysense_api_requests", "HTTP requests", ["route", "method", "status"], registry=r)
        self.latency = Histogram(
            "citysense_api_request_seconds", "HTTP request latency", ["route", "method"], registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        r.register(PoolCollector(get_pool))


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: ApiMetrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = {"code": 500}

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        t0 = time.perf_counter()
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(template, scope["method"], str(status["code"])).inc()
            self.metrics.latency.labels(template, scope["method"]).observe(time.perf_counter() - t0)
