"""Send the demo fraud workload to the ingest service over HTTP: events, late labels, drift.

Run it as ``python -m streamwise_devstack.demo_stream --rate 200 --total 0`` (0 = endless;
Ctrl-C stops after sending the late labels still held back, a second Ctrl-C aborts).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Protocol

import httpx
import typer

from streamwise_core.adapters.settings import DEV_API_KEY
from streamwise_core.contracts.errors import StreamwiseError

from .fraud import CONCEPTS, DueLabel, FraudStream, GeneratedEvent, LateLabels

__all__ = [
    "DemoStreamError",
    "IngestRejected",
    "IngestUnavailable",
    "StreamSummary",
    "TokenBucket",
    "app",
    "demo",
    "main",
    "stream",
]

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({408, 429, 502, 503, 504})
"""Answers that mean "try again later"; every other non-2xx status stops the stream."""
MAX_ITEMS_PER_REQUEST = 10_000
_BACKOFF_FIRST_S = 0.1
_BACKOFF_MAX_S = 5.0
_LOG_EVERY_S = 5.0


class DemoStreamError(StreamwiseError):
    """The demo stream cannot go on."""


class IngestRejected(DemoStreamError):
    """The ingest service refused a request for good (a 4xx or an unexpected status)."""

    def __init__(self, path: str, status: int, detail: str) -> None:
        super().__init__(_rejection_message(path, status, detail))
        self.path = path
        self.status = status
        self.detail = detail


class IngestUnavailable(DemoStreamError):
    """The ingest service stayed unreachable or busy for longer than the retry budget."""

    retriable = True


@dataclass(frozen=True, slots=True)
class StreamSummary:
    """What one run sent."""

    sent: int
    inline_labels: int
    late_labels: int
    retries: int
    seconds: float

    @property
    def rate(self) -> float:
        """Average events per second over the run."""
        return self.sent / self.seconds if self.seconds > 0 else 0.0


@dataclass(slots=True)
class _Counters:
    """Running totals, updated as requests succeed."""

    sent: int = 0
    inline_labels: int = 0
    late_labels: int = 0
    pending_labels: int = 0
    retries: int = 0
    after_drift: bool = False


class TokenBucket:
    """Pace whole batches to ``rate`` events/s; bursts never exceed ``capacity`` events."""

    def __init__(self, rate: float, capacity: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.capacity = float(max(capacity, 1))
        self._clock = clock
        self._tokens = self.capacity
        self._last = clock()

    def take(self, n: int) -> float:
        """Take ``n`` tokens now and return how long to sleep before sending them."""
        if self.rate <= 0:
            return 0.0
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
        self._last = now
        self._tokens -= n
        return max(0.0, -self._tokens / self.rate)


def _rejection_message(path: str, status: int, detail: str) -> str:
    """A readable explanation of a refused request, with a hint where one helps."""
    hints = {
        401: "check --api-key (the ingest service reads its keys from STREAMWISE_API_KEYS)",
        403: "check --api-key (the ingest service reads its keys from STREAMWISE_API_KEYS)",
        404: "is --ingest-url the ingest service?",
        413: "lower --batch",
        422: "the ingest service's application spec does not accept these events; is it running examples/fraud?",
    }
    hint = hints.get(status)
    text = f"ingest refused POST {path} with HTTP {status}: {detail or '(empty body)'}"
    return f"{text}\nhint: {hint}" if hint else text


def _detail(response: httpx.Response) -> str:
    """The interesting part of an error reply, shortened."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:1000]
    if isinstance(body, dict) and "detail" in body:
        body = body["detail"]
    if isinstance(body, list):
        shown = "; ".join(_format_problem(p) for p in body[:5])
        more = f" (+{len(body) - 5} more)" if len(body) > 5 else ""
        return shown + more
    return str(body)[:1000]


def _format_problem(problem: Any) -> str:
    """One validation problem as ``loc: msg``."""
    if isinstance(problem, dict) and "msg" in problem:
        loc = ".".join(str(p) for p in problem.get("loc", []))
        who = f"[{problem['id']}] " if problem.get("id") else ""
        return f"{who}{loc}: {problem['msg']}"
    return str(problem)[:200]


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds asked for by a numeric ``Retry-After`` header."""
    try:
        return max(0.0, float(response.headers.get("retry-after", "")))
    except ValueError:
        return None


def _backoff(attempt: int, jitter: random.Random) -> float:
    """Exponential backoff with jitter, capped."""
    return min(_BACKOFF_MAX_S, _BACKOFF_FIRST_S * 2**attempt) * jitter.uniform(0.5, 1.0)


class _Poster:
    """POST JSON lists to ingest, retrying transient failures without ever dropping a batch."""

    def __init__(self, client: httpx.AsyncClient, counters: _Counters, retry_for: float) -> None:
        self._client = client
        self._counters = counters
        self._retry_for = retry_for
        self._jitter = random.Random()

    async def post(self, path: str, items: list[dict[str, Any]]) -> httpx.Response:
        """Deliver ``items`` or raise; transient failures are retried with backoff."""
        attempt = 0
        first_failure: float | None = None
        while True:
            wait: float | None = None
            try:
                response = await self._client.post(path, json=items)
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            else:
                if response.is_success:
                    return response
                if response.status_code not in RETRY_STATUSES:
                    raise IngestRejected(path, response.status_code, _detail(response))
                problem = f"HTTP {response.status_code}"
                wait = _retry_after(response)
            now = time.monotonic()
            first_failure = first_failure if first_failure is not None else now
            if now - first_failure >= self._retry_for:
                raise IngestUnavailable(
                    f"gave up on POST {path} ({len(items)} items) after {attempt} retries "
                    f"over {now - first_failure:.1f}s; last problem: {problem}"
                )
            delay = _backoff(attempt, self._jitter)
            if wait is not None:
                delay = max(delay, min(wait, _BACKOFF_MAX_S))
            level = logging.WARNING if attempt == 0 else logging.DEBUG
            log.log(level, "POST %s failed (%s); retrying in %.2fs", path, problem, delay)
            self._counters.retries += 1
            attempt += 1
            await asyncio.sleep(delay)


def _utc_now_iso() -> str:
    """Now as an ISO-8601 UTC timestamp."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _event_item(event: GeneratedEvent, inline: bool, timestamp: str) -> dict[str, Any]:
    """The JSON body item of one event; the label key only when it travels inline."""
    item: dict[str, Any] = {"id": event.id, "features": event.features, "timestamp": timestamp}
    if inline:
        item["label"] = event.label
    return item


def _chunks(items: Sequence[DueLabel], size: int) -> Iterator[Sequence[DueLabel]]:
    """``items`` in consecutive slices of at most ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


class _Display(Protocol):
    """Shows progress while streaming."""

    def update(self, counters: _Counters, force: bool = False) -> None: ...

    def drifted(self, index: int) -> None: ...


class _RateMeter:
    """Events per second over the last few seconds."""

    def __init__(self, window: float = 5.0) -> None:
        self._window = window
        self._points: deque[tuple[float, int]] = deque()

    def rate(self, sent: int) -> float:
        """Record ``sent`` now and return the recent rate."""
        now = time.monotonic()
        self._points.append((now, sent))
        while len(self._points) > 2 and now - self._points[0][0] > self._window:
            self._points.popleft()
        t0, s0 = self._points[0]
        return (sent - s0) / (now - t0) if now > t0 else 0.0


def _concept(after_drift: bool) -> str:
    """A short name of the fraud concept now streaming."""
    return f"{'after' if after_drift else 'before'} drift: {CONCEPTS[after_drift]}"


def _labels_text(c: _Counters) -> str:
    """Label counts for display."""
    return f"labels {c.inline_labels} inline + {c.late_labels} late ({c.pending_labels} pending)"


class _LogDisplay:
    """Log a progress line every few seconds."""

    def __init__(self, every: float = _LOG_EVERY_S) -> None:
        self._every = every
        self._next = time.monotonic() + every
        self._meter = _RateMeter()

    def update(self, counters: _Counters, force: bool = False) -> None:
        """Log when the interval has passed (or when forced)."""
        rate = self._meter.rate(counters.sent)
        now = time.monotonic()
        if not force and now < self._next:
            return
        self._next = now + self._every
        log.info(
            "demo: %d events sent (%.0f/s), %s, %d retries, %s",
            counters.sent, rate, _labels_text(counters), counters.retries, _concept(counters.after_drift),
        )

    def drifted(self, index: int) -> None:
        """Announce the concept drift."""
        log.info("demo: concept drift at event %d; fraud now: %s", index, CONCEPTS[True])


class _RichDisplay:
    """A rich progress bar with events, labels, rate and the current concept."""

    def __init__(self, progress: Any, task: Any) -> None:
        self._progress = progress
        self._task = task
        self._meter = _RateMeter()

    def update(self, counters: _Counters, force: bool = False) -> None:
        """Refresh the bar's numbers."""
        self._progress.update(
            self._task,
            completed=counters.sent,
            rate=f"{self._meter.rate(counters.sent):5.0f}/s",
            labels=f"labels {counters.inline_labels}+{counters.late_labels} late",
            retries=f"{counters.retries} retries" if counters.retries else "",
            concept="after drift" if counters.after_drift else "before drift",
            refresh=force,
        )

    def drifted(self, index: int) -> None:
        """Print a line above the bar at the concept drift."""
        self._progress.console.print(f"[yellow]concept drift at event {index}[/]: fraud now {CONCEPTS[True]}")


@contextlib.contextmanager
def _display(progress: bool, total: int | None) -> Iterator[_Display]:
    """A rich progress bar when ``progress`` is set, periodic log lines otherwise."""
    if not progress:
        yield _LogDisplay()
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    columns = [
        SpinnerColumn(),
        BarColumn(bar_width=16) if total else TextColumn("[bold]events"),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TextColumn("{task.fields[labels]}"),
        TextColumn("[cyan]{task.fields[concept]}"),
        TextColumn("[red]{task.fields[retries]}"),
        TimeElapsedColumn(),
    ]
    with Progress(*columns, console=Console(stderr=True), refresh_per_second=4) as bar:
        task = bar.add_task("events", total=total, rate="", labels="", retries="", concept="")
        yield _RichDisplay(bar, task)


async def _pause(seconds: float, stop: asyncio.Event | None) -> None:
    """Sleep ``seconds``, waking early when ``stop`` is set."""
    if seconds <= 0:
        return
    if stop is None:
        await asyncio.sleep(seconds)
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


def _stopped(counters: _Counters, total: int | None, stop: asyncio.Event | None) -> bool:
    """Whether the stream is done."""
    return (total is not None and counters.sent >= total) or (stop is not None and stop.is_set())


async def _send_events(poster: _Poster, late: LateLabels, events: list[GeneratedEvent], counters: _Counters) -> None:
    """POST one batch of events; labels ride along unless held back as late."""
    timestamp = _utc_now_iso()
    routes = [late.route(e) for e in events]
    items = [_event_item(e, inline, timestamp) for e, inline in zip(events, routes, strict=True)]
    response = await poster.post("/v1/events", items)
    _check_ids(response, [e.id for e in events])
    counters.sent += len(events)
    counters.inline_labels += sum(routes)
    counters.pending_labels = late.pending


def _check_ids(response: httpx.Response, sent: list[str]) -> None:
    """Fail loudly when ingest acknowledges other ids than those sent."""
    try:
        body = response.json()
    except ValueError:
        return
    ids = body.get("ids") if isinstance(body, dict) else None
    if ids is not None and ids != sent:
        raise DemoStreamError(f"ingest acknowledged {len(ids)} ids that differ from the {len(sent)} sent")


async def _send_labels(poster: _Poster, due: list[DueLabel], batch: int, counters: _Counters) -> None:
    """POST late labels that are due, in chunks of ``batch``."""
    for chunk in _chunks(due, batch):
        await poster.post("/v1/labels", [{"id": d.id, "label": d.label} for d in chunk])
        counters.late_labels += len(chunk)
        counters.pending_labels -= len(chunk)


def _check_arguments(total: int | None, rate: float, batch: int, drift_at: int, late_fraction: float) -> None:
    """Refuse arguments the stream cannot honour."""
    if total is not None and total < 0:
        raise ValueError("total must be >= 0 (0 or None = endless)")
    if rate < 0:
        raise ValueError("rate must be >= 0 (0 = as fast as possible)")
    if not 1 <= batch <= MAX_ITEMS_PER_REQUEST:
        raise ValueError(f"batch must be between 1 and {MAX_ITEMS_PER_REQUEST}")
    if drift_at < 0:
        raise ValueError("drift_at must be >= 0")
    if not 0 <= late_fraction <= 1:
        raise ValueError("late_fraction must be between 0 and 1")


async def stream(
    ingest_url: str,
    api_key: str,
    *,
    total: int | None = None,
    rate: float = 200.0,
    batch: int = 50,
    drift_at: int = 20_000,
    seed: int = 7,
    progress: bool = True,
    late_fraction: float = 0.3,
    run_id: str | None = None,
    retry_for: float = 300.0,
    timeout: float = 10.0,
    stop: asyncio.Event | None = None,
) -> StreamSummary:
    """Stream ``total`` fraud events (None or 0 = until ``stop`` is set) to ingest at ``rate``/s."""
    _check_arguments(total, rate, batch, drift_at, late_fraction)
    limit = total or None
    generator = FraudStream(seed, drift_at=drift_at, run_id=run_id)
    late = LateLabels(seed, late_fraction=late_fraction)
    counters = _Counters()
    bucket = TokenBucket(rate, capacity=batch)
    headers = {"X-API-Key": api_key, "User-Agent": "streamwise-demo-stream"}
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=ingest_url.rstrip("/"), headers=headers, timeout=timeout) as client:
        poster = _Poster(client, counters, retry_for)
        with _display(progress, limit) as display:
            display.update(counters, force=True)
            while not _stopped(counters, limit, stop):
                n = batch if limit is None else min(batch, limit - counters.sent)
                await _pause(bucket.take(n), stop)
                if stop is not None and stop.is_set():
                    break
                events = generator.take(n)
                if events[-1].after_drift and not counters.after_drift:
                    counters.after_drift = True
                    if drift_at > 0:
                        display.drifted(drift_at)
                await _send_events(poster, late, events, counters)
                await _send_labels(poster, late.due(events[-1].index), batch, counters)
                display.update(counters)
            await _send_labels(poster, late.drain(), batch, counters)
            display.update(counters, force=True)
    return StreamSummary(
        sent=counters.sent,
        inline_labels=counters.inline_labels,
        late_labels=counters.late_labels,
        retries=counters.retries,
        seconds=time.monotonic() - started,
    )


async def _stream_until_interrupted(**kwargs: Any) -> StreamSummary:
    """Run ``stream``; the first Ctrl-C stops it gracefully, a second one aborts."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_interrupt() -> None:
        stop.set()
        loop.remove_signal_handler(signal.SIGINT)

    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGINT, on_interrupt)
    try:
        return await stream(**kwargs, stop=stop)
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGINT)


app = typer.Typer(add_completion=False, help="Stream the demo fraud workload to the ingest service.")


@app.command()
def demo(
    ingest_url: Annotated[str, typer.Option(help="Base URL of the ingest service.")] = "http://127.0.0.1:8001",
    api_key: Annotated[str, typer.Option(envvar="STREAMWISE_API_KEY", help="Sent as X-API-Key.")] = DEV_API_KEY,
    rate: Annotated[float, typer.Option(min=0, help="Events per second; 0 = as fast as possible.")] = 200.0,
    total: Annotated[int, typer.Option(min=0, help="Events to send; 0 = endless (Ctrl-C stops).")] = 0,
    drift_at: Annotated[int, typer.Option(min=0, help="Event index where the fraud pattern changes.")] = 20_000,
    seed: Annotated[int, typer.Option(help="Seed of the generator; same seed, same events.")] = 7,
    batch: Annotated[int, typer.Option(min=1, max=MAX_ITEMS_PER_REQUEST, help="Events per request.")] = 50,
    late_fraction: Annotated[float, typer.Option(min=0, max=1, help="Share of labels sent later.")] = 0.3,
    run_id: Annotated[
        str | None, typer.Option(help="Prefix of event ids (default fraud-s<seed>); change it to resend.")
    ] = None,
    retry_for: Annotated[float, typer.Option(min=0, help="Seconds to keep retrying an unavailable ingest.")] = 300.0,
    progress: Annotated[bool, typer.Option(help="Show a progress bar (else log every few seconds).")] = True,
) -> None:
    """Stream card transactions with inline and late labels and a concept drift."""
    from rich.console import Console
    from rich.markup import escape

    console = Console(stderr=True)
    if not progress:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
        logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        summary = asyncio.run(
            _stream_until_interrupted(
                ingest_url=ingest_url, api_key=api_key, total=total, rate=rate, batch=batch,
                drift_at=drift_at, seed=seed, progress=progress, late_fraction=late_fraction,
                run_id=run_id, retry_for=retry_for,
            )
        )
    except DemoStreamError as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        console.print("[yellow]aborted[/]")
        raise typer.Exit(130) from None
    console.print(
        f"sent {summary.sent} events in {summary.seconds:.1f}s ({summary.rate:.0f}/s); "
        f"labels {summary.inline_labels} inline + {summary.late_labels} late; {summary.retries} retries"
    )


def main() -> None:
    """Entry point of ``python -m streamwise_devstack.demo_stream``."""
    app()


if __name__ == "__main__":
    main()
