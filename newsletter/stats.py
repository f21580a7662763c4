"""Reading statistics: event intake, the machine-traffic rules, the buffer.

Rules this module keeps:

- **What is a machine** is decided here and nowhere else: :func:`classify` for
  one request (a HEAD request; Apple Mail Privacy Protection, which fetches
  every image from Apple's network whether or not the reader opens — the
  client address comes through ``[web] trusted_proxies``; link scanners and
  scripts by their user agent), and :func:`burst_events` for the clicks of
  one message (many different links within a few seconds, soon after
  sending: a scanner following every link).  Gmail's (and Yahoo's) image
  proxy fetches when the reader opens the mail: a *human* open, flagged
  ``via_proxy``, with no client details.  Human and machine events are both
  stored and always reported side by side, never as one number.
- **What is stored** follows the publication's ``tracking`` at the time of
  the event (:func:`intake`): ``off`` stores nothing; ``aggregate`` never
  stores a subscriber id nor a delivery id (a reader key from a
  per-subscriber mail is dropped too: switching modes never back-fills);
  ``per-subscriber`` keeps the delivery's subscriber id.  No client address
  and no user agent is ever stored — only the verdict.
- **Provider events** (SendGrid, Mailgun, Postmark opens, clicks and
  deliveries, when the service does the tracking) go into the same table by
  the same rules (:func:`record_provider_events`): the delivery they name
  (``nl_delivery_id``) gives the edition and the variant, the clicked URL is
  found among the edition's tracked links, and the service's client details
  go through :func:`classify`.  A webhook retry of the same event is stored
  once: each event carries the provider's event id (:func:`event_key`; which
  field, per provider, is in web/webhooks.py), unique per source in the table,
  and the row is inserted or ignored.  Kept as a keyed hash, so that in
  ``aggregate`` mode an id that names the provider's message (Postmark's) does
  not lead back to a delivery.
- **Counting never slows a request**: :class:`EventBuffer` appends in memory
  and a background thread writes every ``interval`` seconds or ``max_events``
  events, and on :meth:`EventBuffer.close` (a clean stop loses nothing; a
  ``kill -9`` loses at most one interval).  A failed write (database down)
  keeps the events for the next try, up to ``max_pending``.
- **Report faces**: :func:`report_csv_rows` (the per-article CSV of ``edition
  report --csv``) and :func:`hours_svg` (the 48-hour curve as a self-contained
  SVG: no script, no external resource) are what a console page shows; the
  numbers themselves come from :func:`newsletter.store.stats.edition_report`.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

log = logging.getLogger(__name__)

# Apple's own address block (AS714), from which Mail Privacy Protection
# prefetches images; Apple publishes it as its egress range.
APPLE_MPP_NETWORKS = tuple(ipaddress.ip_network(n) for n in ("17.0.0.0/8", "2620:149::/32", "2a01:b740::/32"))

# Substrings (lower case) of the user agents of link scanners, security
# gateways and scripts.  Real browsers and mail clients carry none of them.
SCANNER_AGENTS = (
    "barracuda", "mimecast", "proofpoint", "urldefense", "safelinks", "bingpreview", "msnbot",
    "symantec", "trendmicro", "fireeye", "forcepoint", "sophos", "zscaler", "cisco", "ironport",
    "python-requests", "python-urllib", "aiohttp", "httpx", "curl/", "wget/", "go-http-client",
    "okhttp", "java/", "libwww", "scanner", "crawler", "spider", "bot/", "bot;", "headless",
)
# Image proxies that fetch when the reader opens the mail.
OPEN_PROXIES = ("googleimageproxy", "yahoomailproxy")

BURST_LINKS = 3          # different links of one message ...
BURST_SECONDS = 10.0     # ... within this many seconds ...
BURST_AFTER_SEND = 600.0  # ... starting this soon after the message was composed: a scanner


@dataclass(frozen=True)
class Verdict:
    machine: bool
    reason: str | None = None  # head | apple-mpp | scanner | no-agent (| burst, from burst_events)
    via_proxy: bool = False


def classify(kind: str, method: str, ip: str, user_agent: str) -> Verdict:
    """Machine or human, for one open or click request (see the module doc)."""
    if method.upper() == "HEAD":
        return Verdict(True, "head")
    ua = user_agent.lower()
    if kind == "open" and any(p in ua for p in OPEN_PROXIES):
        return Verdict(False, via_proxy=True)
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        address = None
    if address is not None and any(address in net for net in APPLE_MPP_NETWORKS):
        return Verdict(True, "apple-mpp")
    if not ua.strip():
        return Verdict(True, "no-agent")
    if any(s in ua for s in SCANNER_AGENTS):
        return Verdict(True, "scanner")
    return Verdict(False)


def burst_events(clicks: Iterable[tuple[Any, str | None, int | None, datetime, datetime | None]]) -> set[Any]:
    """The ids of human-classified clicks that are a scanner's burst: ``clicks``
    are (id, reader, link, at, sent_at); a burst is :data:`BURST_LINKS` different
    links of one reader within :data:`BURST_SECONDS`, the first of them at most
    :data:`BURST_AFTER_SEND` after the message was composed (when that is known)."""
    by_reader: dict[str, list[tuple[Any, int | None, datetime, datetime | None]]] = {}
    for ident, reader, link, at, sent_at in clicks:
        if reader:
            by_reader.setdefault(reader, []).append((ident, link, at, sent_at))
    out: set[Any] = set()
    for items in by_reader.values():
        items.sort(key=lambda x: x[2])
        for i, (_ident, _link, start, sent_at) in enumerate(items):
            if sent_at is not None and (start - sent_at).total_seconds() > BURST_AFTER_SEND:
                continue
            window = [x for x in items[i:] if (x[2] - start).total_seconds() <= BURST_SECONDS]
            if len({x[1] for x in window}) >= BURST_LINKS:
                out.update(x[0] for x in window)
    return out


def intake(mode: str, event: dict[str, Any]) -> dict[str, Any] | None:
    """The event as it may be stored under the publication's ``mode`` (see the
    module doc), or None when nothing may be stored."""
    if mode == "off":
        return None
    reader = event.get("reader")
    if mode != "per-subscriber" and reader and not reader.startswith("m"):
        event = {**event, "reader": None}
    return event


class EventBuffer:
    """Events kept in memory and written by a background thread (see the module doc).

    ``write`` takes a list of events and stores them (one transaction); it runs
    in the buffer's thread only."""

    def __init__(self, write: Callable[[Sequence[dict[str, Any]]], None], *, interval: float = 1.0,
                 max_events: int = 500, max_pending: int = 100_000):
        self.write = write
        self.interval = interval
        self.max_events = max_events
        self.max_pending = max_pending
        self._events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._flush_lock = threading.Lock()
        self.dropped = 0

    def add(self, event: dict[str, Any]) -> None:
        with self._lock:
            if len(self._events) >= self.max_pending:
                self.dropped += 1
                return
            self._events.append(event)
            full = len(self._events) >= self.max_events
        if self._thread is None:
            self.start()
        if full:
            self._wake.set()

    def start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name="stats-flush", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            self.flush()

    def flush(self) -> int:
        """Write what is buffered now; on failure keep it for the next try.  Returns
        the number written."""
        with self._flush_lock:
            with self._lock:
                batch, self._events = self._events, []
            if not batch:
                return 0
            try:
                self.write(batch)
            except Exception as exc:  # the database is down: try again next interval
                log.warning("statistics: cannot write %d events (%s); kept for the next try",
                            len(batch), exc.__class__.__name__)
                with self._lock:
                    self._events[:0] = batch[: max(self.max_pending - len(self._events), 0)]
                return 0
            return len(batch)

    def pending(self) -> int:
        with self._lock:
            return len(self._events)

    def close(self) -> None:
        """Stop the thread and write everything still buffered."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.flush()


def event_key(key: bytes, source: str, event_id: str) -> str:
    """What ``stats_events.event_id`` keeps of a provider's event id: HMAC-SHA256 with
    the link-signing key (128 bits, hex).  The same event always gives the same value
    (a retry is recognised); nobody without the key can tell which message it was."""
    import hashlib
    import hmac

    return hmac.new(key, f"{source}\n{event_id}".encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()[:32]


def record_provider_events(engine, config, events: Iterable[Any], now: datetime) -> int:
    """Store the opens, clicks and deliveries a mail service reported (see the
    module doc); returns how many were stored (an event stored before — a webhook
    retry — is not stored again, nor counted)."""
    from sqlalchemy import select

    from .editions.assemble import VariantKey
    from .links import tracked_links
    from .store import stats as sq
    from .store.editions import load_content
    from .store.tables import deliveries, editions

    wanted = [ev for ev in events if getattr(ev, "reading", None) and ev.delivery_id is not None]
    if not wanted:
        return 0
    modes = {p.slug: p.tracking for p in config.publications}
    secret = config.secret()
    out = []
    with engine.connect() as conn:
        contents: dict[int, Any] = {}
        for ev in wanted:
            d = conn.execute(select(deliveries.c.edition_id, deliveries.c.variant, editions.c.publication,
                                    editions.c.content, editions.c.id)
                             .join(editions, editions.c.id == deliveries.c.edition_id)
                             .where(deliveries.c.id == ev.delivery_id)).first()
            if d is None:
                continue
            if d.edition_id not in contents:
                contents[d.edition_id] = tracked_links(load_content(d))
            key = VariantKey.decode(d.variant)
            link = None
            if ev.reading == "click":
                urls = [u for u, _a in contents[d.edition_id]]
                link = urls.index(ev.url) if ev.url in urls else None
            verdict = (Verdict(True, "apple-mpp") if ev.machine_open else
                       classify(ev.reading, "GET", ev.client_ip, ev.user_agent) if ev.reading != "delivered"
                       else Verdict(False))
            event = {
                "edition_id": d.edition_id, "kind": ev.reading, "link": link,
                "article_id": contents[d.edition_id][link][1] if link is not None else None,
                "part": key.format if ev.reading == "click" else None, "fields": ",".join(key.fields),
                "reader": f"d{ev.delivery_id}", "machine": verdict.machine, "reason": verdict.reason,
                "via_proxy": verdict.via_proxy, "source": ev.source, "sent_at": None, "at": ev.at or now,
                "event_id": event_key(secret, ev.source, ev.event_id) if ev.event_id else None,
            }
            stored = intake(modes.get(d.publication, "off"), event)
            if stored is not None:
                out.append(stored)
    return sq.write_events(engine, out) if out else 0


def edition_report(engine, config, edition) -> dict[str, Any]:
    """The reading report of one edition row — ``edition report N`` and the
    console's 閲読の統計 both call this: :func:`newsletter.store.stats.edition_report`
    over the content as it went out, by the publication's ``tracking`` mode.
    Aggregates only: nothing in it names a subscriber."""
    from .store import stats as sq
    from .store.editions import load_content

    mode = next((p.tracking for p in config.publications if p.slug == edition.publication), "off")
    with engine.connect() as conn:
        return sq.edition_report(conn, edition, load_content(edition), mode)


CSV_HEADER = ("article_id", "title", "url", "clicks_human", "clicks_machine", "click_events_human",
              "click_events_machine")


def report_csv_rows(report: dict[str, Any]) -> list[list[Any]]:
    """The per-article rows under :data:`CSV_HEADER`."""
    return [[a["id"], a["title"], a["url"], a["clicks_human"], a["clicks_machine"], a["click_events_human"],
             a["click_events_machine"]] for a in report["articles"]]


def hours_svg(report: dict[str, Any], *, title: str = "48時間の推移（人による開封・クリック）") -> str:
    """The report's ``hours`` as an SVG bar chart: human opens and clicks per hour
    side by side, machine events as a thin grey bar; text in the SVG's <title>
    and <desc> for screen readers."""
    from html import escape

    hours = report["hours"]
    peak = max([1] + [max(h["opens_human"], h["clicks_human"], h["opens_machine"] + h["clicks_machine"])
                      for h in hours])
    width, height, left, bottom = 48 * 12 + 40, 180, 32, 20
    scale = (height - bottom - 10) / peak
    bars = []
    for h in hours:
        x = left + h["hour"] * 12
        for dx, value, color, w in ((0, h["opens_human"], "#1d4f7c", 5), (5, h["clicks_human"], "#c8553d", 5),
                                    (10, h["opens_machine"] + h["clicks_machine"], "#9aa4ad", 1)):
            if value:
                bh = value * scale
                bars.append(f'<rect x="{x + dx}" y="{height - bottom - bh:.1f}" width="{w}" height="{bh:.1f}" '
                            f'fill="{color}"><title>{h["hour"]}h: {value}</title></rect>')
    ticks = "".join(f'<text x="{left + t * 12}" y="{height - 4}" font-size="10">{t}h</text>' for t in range(0, 48, 6))
    total = (f'opens {sum(h["opens_human"] for h in hours)}, clicks {sum(h["clicks_human"] for h in hours)}, '
             f'machine {sum(h["opens_machine"] + h["clicks_machine"] for h in hours)}')
    return (f'<svg xmlns="http://www.w3.org/2000/svg" role="img" viewBox="0 0 {width} {height}" '
            f'width="{width}" height="{height}"><title>{escape(title)}</title><desc>{escape(total)}</desc>'
            f'<text x="0" y="12" font-size="10">{peak}</text>'
            f'<line x1="{left}" y1="{height - bottom}" x2="{width}" y2="{height - bottom}" stroke="#59636d"/>'
            + "".join(bars) + ticks + "</svg>")
