"""The ingestor's HTTP endpoint for operators and orchestrators: ``/metrics`` (Prometheus), ``/livez``
(the process answers) and ``/readyz`` (connected to both the broker and the database).

It starts before anything connects, so operators see the ingestor, and why it is not ready, during
exactly the outages they need to see. Served from daemon threads; a request never touches the pipeline.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

log = logging.getLogger("citysense.ingest.http")


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # scrapes every few seconds must not flood the logs
        pass


def app(registry: CollectorRegistry, readiness: Callable[[], dict[str, bool]]):
    """A WSGI app. ``readiness`` returns the checks by name; ready when all are true."""
    metrics = make_wsgi_app(registry)

    def serve(environ, start_response):
        path = environ.get("PATH_INFO", "/")
        if path == "/livez":
            return _json(start_response, 200, {"status": "ok"})
        if path == "/readyz":
            checks = readiness()
            ready = all(checks.values())
            return _json(start_response, 200 if ready else 503, {"status": "ready" if ready else "not ready", **checks})
        if path in ("/metrics", "/"):
            return metrics(environ, start_response)
        return _json(start_response, 404, {"status": "not found", "paths": ["/metrics", "/livez", "/readyz"]})

    return serve


def _json(start_response, status: int, body: dict):
    data = json.dumps(body).encode()
    reason = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}[status]
    start_response(f"{status} {reason}", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]


def start(host: str, port: int, registry: CollectorRegistry, readiness: Callable[[], dict[str, bool]]) -> _Server:
    server = make_server(host, port, app(registry, readiness), server_class=_Server, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    log.info("metrics and health on http://%s:%d/ (metrics, livez, readyz)", host, server.server_port)
    return server
