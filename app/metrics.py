"""Prometheus metrics, one registry per app (so tests can run several apps side by side)."""

from __future__ import annotations

import time

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 24, 32, 48, 64, 128)


class Metrics:
    """The app's Prometheus metrics, in a registry of its own: HTTP requests (by route
    template, method, status), latency, in-flight count and unexpected exceptions; the
    batcher's batch sizes, queue wait and depth, model-call time and refusals; predictions by
    class; the served model; readiness; and the process collector (memory, CPU)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)  # collections per generation: app.memory's settings at work
        self.requests = Counter(
            "http_requests_total",
            "HTTP requests by route, method and status.",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "http_request_duration_seconds",
            "HTTP request latency by route.",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.unhandled_errors = Counter(
            "http_unhandled_errors_total",
            "Requests answered 500 because of an unexpected exception (logged with its request "
            "id), by route.",
            ["route"],
            registry=r,
        )
        self.in_flight = Gauge("http_requests_in_flight", "Requests being handled.", registry=r)
        # counted by the middleware on the event loop, read when scraped (a gauge's inc and dec
        # take a lock each, twice a request)
        self.requests_in_flight = 0
        self.in_flight.set_function(lambda: self.requests_in_flight)
        self.batch_size = Histogram(
            "inference_batch_size", "Images per model call.", buckets=BATCH_BUCKETS, registry=r
        )
        self.queue_wait = Histogram(
            "inference_queue_wait_seconds",
            "Time an image waits before its model call.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inference_time = Histogram(
            "inference_duration_seconds",
            "Duration of one model call.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "inference_queue_depth", "Images waiting for the model.", registry=r
        )
        self.rejected = Counter(
            "inference_rejected_total", "Requests refused because the queue was full.", registry=r
        )
        self.bodies_held = Gauge(
            "http_request_body_bytes_held",
            "Bytes of request bodies held now, all requests together (CIFAR10_MAX_BUFFERED_BYTES "
            "bounds it).",
            registry=r,
        )
        self.bodies_refused = Counter(
            "http_request_bodies_refused_total",
            "Requests answered 503 because their bodies did not fit the body budget.",
            registry=r,
        )
        self.timeouts = Counter(
            "inference_timeouts_total",
            "Requests answered 504 because their images were not computed within the request "
            "timeout.",
            registry=r,
        )
        self.inference_threads = Gauge(
            "inference_threads_alive",
            "Inference threads running (one per stream); 0 after start means nothing can be "
            "served: readiness fails.",
            registry=r,
        )
        self.predictions = Counter(
            "predictions_total", "Top-1 predictions by class.", ["label"], registry=r
        )
        self._prediction_series: dict[str, Counter] = {}  # labelled children, looked up once
        self.model_info = Info("model", "The model being served.", registry=r)
        self.reloads = Counter(
            "model_reloads_total",
            "Attempts to swap in a newer model version, by result.",
            ["result"],
            registry=r,
        )
        self.ready = Gauge("model_ready", "1 once the model is loaded and warmed up.", registry=r)

    def count_prediction(self, label: str) -> None:
        """``predictions_total{label}`` + 1, without the label lookup on every request."""
        child = self._prediction_series.get(label)
        if child is None:
            child = self._prediction_series[label] = self.predictions.labels(label)
        child.inc()


class MetricsMiddleware:
    """Counts and times every request, labelled by route template (never the raw path)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        self._series: dict[tuple[str, str, int], tuple] = {}  # labelled children, looked up once

    def _children(self, path: str, method: str, status: int) -> tuple:
        key = (path, method, status)
        children = self._series.get(key)
        if children is None:
            children = self._series[key] = (
                self.metrics.requests.labels(path, method, str(status)),
                self.metrics.latency.labels(path, method),
            )
        return children

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        start = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.requests_in_flight += 1
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.requests_in_flight -= 1
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            if method not in KNOWN_METHODS:  # a client's made-up method is not a new series
                method = "other"
            count, latency = self._children(path, method, status)
            count.inc()
            latency.observe(time.perf_counter() - start)
