"""Capture everything the system writes while the tests run, and search it for canaries.

What is captured, for the whole session:

* every process started through tests/support/processes.py (Celery workers and
  beats, gunicorn, ``payhooks run`` and its children): all its output, line by
  line (``Process`` registers itself);
* every ``payhooks`` command run through ``processes.cli``: stdout and stderr;
* every log record of the test process itself, formatted as production formats
  it (infra/logs.py), by a handler on the root logger at INFO;
* every envelope the Sentry SDK of any process sends: ``SENTRY_DSN`` points the
  test process and every process it starts at a local fake (fake_sentry.py);
* what a test hands over itself (``CAPTURE.add_text``), such as a /metrics page.

Each test's teardown searches what was captured since the last search
(``no_canary_leaks`` in tests/conftest.py); the end of the session searches what
came late (processes shutting down, envelopes still in flight) and checks that
the capture was not empty. A hit names where it was found, with the line and
the canary masked.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from infra.logs import ContextFilter, formatter
from tests.support.canaries import CANARIES
from tests.support.fake_sentry import Envelope, FakeSentry


@dataclass
class Source:
    kind: str  # process | command | test process | sentry | metrics
    label: str
    lines: list[str]  # shared with whoever appends to it; only ever appended to
    checked: int = 0


@dataclass(frozen=True)
class Leak:
    source: str
    line_number: int
    canaries: tuple[str, ...]
    excerpt: str

    def __str__(self) -> str:
        where = f"{self.source}, line {self.line_number}"
        return f"{where}: {', '.join(self.canaries)}\n    {self.excerpt}"


@dataclass
class Capture:
    sources: list[Source] = field(default_factory=list)
    leaks: list[Leak] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, kind: str, label: str, lines: list[str]) -> Source:
        source = Source(kind, label, lines)
        with self._lock:
            self.sources.append(source)
        return source

    def add_text(self, kind: str, label: str, text: str | None) -> None:
        if text:
            self.add(kind, label, text.splitlines())

    def add_envelope(self, envelope: Envelope) -> None:
        events = envelope.payloads("event")
        what = (
            f"event {events[0].get('event_id')}"
            if events
            else ", ".join(str(header.get("type")) for header, _ in envelope.items)
        )
        self.add("sentry", f"Sentry envelope ({what})", envelope.text.splitlines())

    def scan(self) -> list[Leak]:
        """Search every line captured since the last scan; return (and keep) what was found."""
        found = []
        with self._lock:
            sources = list(self.sources)
        for source in sources:
            end = len(source.lines)
            for index in range(source.checked, end):
                line = source.lines[index]
                hits = CANARIES.find(line)
                if hits:
                    found.append(
                        Leak(
                            source.label,
                            index + 1,
                            tuple(sorted({h[0] for h in hits})),
                            _excerpt(line),
                        )
                    )
            source.checked = end
        self.leaks.extend(found)
        return found

    def count(self, kind: str) -> int:
        return sum(len(source.lines) for source in self.sources if source.kind == kind)

    def sources_of(self, kind: str) -> int:
        return sum(1 for source in self.sources if source.kind == kind)


def _excerpt(line: str, width: int = 240) -> str:
    masked = CANARIES.mask(line.rstrip("\n"))
    start = max(0, masked.find("<canary:") - width // 3)
    excerpt = masked[start : start + width]
    return ("…" if start else "") + excerpt + ("…" if start + width < len(masked) else "")


class _TestProcessHandler(logging.Handler):
    """Keeps the test process's log lines, formatted as a payhooks process would write them."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__(logging.INFO)
        self.lines = lines
        self.setFormatter(formatter("json"))
        self.addFilter(ContextFilter())

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record))
        except Exception:  # noqa: BLE001 - as logging.Handler does
            self.handleError(record)


CAPTURE = Capture()
_state: dict = {}


def start() -> FakeSentry:
    """Start the fake Sentry and the test process's log capture (once per session)."""
    sentry = FakeSentry(on_envelope=CAPTURE.add_envelope).start()
    lines: list[str] = []
    CAPTURE.add("test process", "test process log", lines)
    handler = _TestProcessHandler(lines)
    root = logging.getLogger()
    root.addHandler(handler)
    if root.getEffectiveLevel() > logging.INFO:
        root.setLevel(logging.INFO)
    _state.update(sentry=sentry, handler=handler)
    return sentry


def ensure_handler() -> None:
    """Put the capture handler back if something replaced the root logger's handlers."""
    handler = _state.get("handler")
    root = logging.getLogger()
    if handler is not None and handler not in root.handlers:
        root.addHandler(handler)


def stop() -> None:
    handler = _state.pop("handler", None)
    if handler is not None:
        logging.getLogger().removeHandler(handler)
    sentry = _state.pop("sentry", None)
    if sentry is not None:
        sentry.stop()


def fake_sentry() -> FakeSentry:
    return _state["sentry"]


def expect_capture() -> None:
    """Say that this session drove the leak paths, so an empty capture is an error, not a pass."""
    _state["expected"] = True


def expected_capture() -> bool:
    return bool(_state.get("expected"))


def vacuity_problems() -> list[str]:
    """Why the search would have proven nothing: a kind of output it never saw."""
    problems = []
    workers = [s for s in CAPTURE.sources if s.kind == "process" and "worker" in s.label]
    if not any(s.lines for s in workers):
        problems.append("the canary search saw no line from any Celery worker")
    if not CAPTURE.count("test process"):
        problems.append("the canary search saw no log line of the test process")
    if not CAPTURE.count("command"):
        problems.append("the canary search saw no output of a payhooks command")
    if not fake_sentry().events():
        problems.append("the canary search saw no Sentry event")
    return problems


def report(leaks: list[Leak]) -> str:
    shown = "\n".join(f"  {leak}" for leak in leaks[:20])
    more = f"\n  … and {len(leaks) - 20} more" if len(leaks) > 20 else ""
    what = "personal data or a secret reached a log line or an error report"
    return f"{what} ({len(leaks)} hits):\n{shown}{more}"
