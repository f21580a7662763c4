"""Queries on reading statistics: writing events, the edition report, pruning, erasure.

Rules this module keeps:

- :func:`write_events` is the one INSERT into ``stats_events``.  An event with an
  ``event_id`` (a provider's, keyed: :func:`newsletter.stats.event_key`) is
  inserted or ignored on (source, event_id): a webhook retry is stored once.  A reader key
  ``d<delivery id>`` is accepted only for a delivery of the same edition and
  becomes that delivery's ``subscriber_id`` (none when the subscriber was
  erased); the caller (:func:`newsletter.stats.intake`) has already removed it
  when the publication's mode is not per-subscriber.
- Machine and human counts are kept apart in every number of
  :func:`edition_report`; the burst rule is applied here, at report time, by
  :func:`newsletter.stats.burst_events` (the one home of that rule).
- :func:`prune` folds events older than the retention into ``stats_counts``
  (counts and distinct readers, never a reader key) and deletes them; the
  report adds those counts back.  A reader with events on both sides of the
  cut is counted once on each side.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.engine import Connection, Engine

from ..editions.assemble import VariantKey
from ..links import tracked_links
from ..stats import burst_events
from .mail_events import insert_ignore
from .tables import consents, deliveries, editions, stats_counts, stats_events

EVENT_KEYS = ("edition_id", "kind", "link", "article_id", "part", "fields", "reader", "subscriber_id", "machine",
              "reason", "via_proxy", "source", "sent_at", "at", "event_id")


def write_events(engine: Engine, events: Sequence[Mapping[str, Any]]) -> int:
    """Store ``events`` in one transaction; returns how many were stored."""
    rows = [{k: ev.get(k) for k in EVENT_KEYS} for ev in events]
    for r in rows:
        r["machine"] = bool(r["machine"])
        r["via_proxy"] = bool(r["via_proxy"])
        r["subscriber_id"] = None
    wanted = {int(r["reader"][1:]) for r in rows if r["reader"] and r["reader"].startswith("d")}
    with engine.begin() as conn:
        owners: dict[int, tuple[int, int | None]] = {}
        ids = sorted(wanted)
        for i in range(0, len(ids), 500):
            for d in conn.execute(select(deliveries.c.id, deliveries.c.edition_id, deliveries.c.subscriber_id)
                                  .where(deliveries.c.id.in_(ids[i:i + 500]))):
                owners[d.id] = (d.edition_id, d.subscriber_id)
        kept = []
        for r in rows:
            if r["reader"] and r["reader"].startswith("d"):
                owner = owners.get(int(r["reader"][1:]))
                if owner is None or owner[0] != r["edition_id"] or owner[1] is None:
                    continue  # not this edition's delivery, or an erased subscriber: nothing to keep
                r["subscriber_id"] = owner[1]
            kept.append(r)
        ours = [r for r in kept if r["event_id"] is None]
        if ours:
            conn.execute(stats_events.insert(), ours)
        stored = len(ours)
        for r in kept:
            if r["event_id"] is not None:
                stored += insert_ignore(conn, stats_events, r, ["source", "event_id"])
    return stored


def delete_subscriber_events(conn: Connection, subscriber_id: int) -> int:
    return conn.execute(delete(stats_events).where(stats_events.c.subscriber_id == subscriber_id)).rowcount


def prune(engine: Engine, edition_ids_by_retention: Mapping[float, Sequence[int]], now: datetime) -> int:
    """Fold and delete the events older than each retention (seconds) of the
    editions listed under it.  Returns the number of events deleted."""
    total = 0
    with engine.begin() as conn:
        for seconds, edition_ids in edition_ids_by_retention.items():
            if not edition_ids:
                continue
            cut = now - timedelta(seconds=seconds)
            old = list(conn.execute(select(stats_events).where(
                stats_events.c.edition_id.in_(list(edition_ids)), stats_events.c.at < cut)))
            if not old:
                continue
            bursts = burst_events((e.id, e.reader, e.link, e.at, e.sent_at) for e in old
                                  if e.kind == "click" and not e.machine)
            created = dict(conn.execute(select(editions.c.id, editions.c.created_at)
                                        .where(editions.c.id.in_({e.edition_id for e in old}))).all())
            groups: dict[tuple, list] = defaultdict(list)
            for e in old:
                machine = e.machine or e.id in bursts
                hour = int((e.at - created[e.edition_id]).total_seconds() // 3600)
                groups[(e.edition_id, e.kind, e.link, e.article_id, e.part, e.fields, machine, e.via_proxy,
                        hour)].append(e)
            conn.execute(stats_counts.insert(), [
                {"edition_id": k[0], "kind": k[1], "link": k[2], "article_id": k[3], "part": k[4], "fields": k[5],
                 "machine": k[6], "via_proxy": k[7], "hour": k[8], "events": len(v),
                 "readers": len({e.reader for e in v if e.reader})}
                for k, v in groups.items()])
            ids = [e.id for e in old]
            for i in range(0, len(ids), 500):
                total += conn.execute(delete(stats_events).where(stats_events.c.id.in_(ids[i:i + 500]))).rowcount
    return total


def _ratio(n: int, d: int) -> float | None:
    return round(n / d, 4) if d else None


def edition_report(conn: Connection, edition, content: Mapping[str, Any], mode: str) -> dict[str, Any]:
    """The report of one edition (its keys are documented in README.md)."""
    links = tracked_links(content)
    field_names = {f["slug"]: f["name"] for f in content["fields"]}
    # -- deliveries
    delivered_by_variant: dict[tuple[str, tuple[str, ...]], int] = defaultdict(int)
    text_only_delivered = 0
    status_counts: dict[str, int] = defaultdict(int)
    for variant, status, n in conn.execute(
            select(deliveries.c.variant, deliveries.c.status, func.count())
            .where(deliveries.c.edition_id == edition.id).group_by(deliveries.c.variant, deliveries.c.status)):
        status_counts[status] += n
        if status == "sent":
            key = VariantKey.decode(variant)
            delivered_by_variant[(key.format, key.fields)] += n
            if key.format == "text":
                text_only_delivered += n
    unsubscribed = conn.execute(
        select(func.count(func.distinct(consents.c.subscriber_id)))
        .select_from(consents.join(deliveries, deliveries.c.subscriber_id == consents.c.subscriber_id))
        .where(deliveries.c.edition_id == edition.id, deliveries.c.status == "sent",
               consents.c.event == "unsubscribed", consents.c.at >= edition.created_at)).scalar() or 0
    # -- events: one pass, machine verdicts completed with the burst rule
    events = list(conn.execute(select(stats_events).where(stats_events.c.edition_id == edition.id)))
    bursts = burst_events((e.id, e.reader, e.link, e.at, e.sent_at) for e in events
                          if e.kind == "click" and not e.machine)
    counted = list(conn.execute(select(stats_counts).where(stats_counts.c.edition_id == edition.id)))

    def side(machine: bool) -> str:
        return "machine" if machine else "human"

    opens = {"human": set(), "machine": set()}
    open_events = {"human": 0, "machine": 0}
    via_proxy = set()
    via_proxy_events = 0
    clicks = {"human": set(), "machine": set()}
    click_events = {"human": 0, "machine": 0}
    per_link: dict[int, dict[str, Any]] = defaultdict(lambda: {"human": set(), "machine": set(),
                                                               "human_events": 0, "machine_events": 0})
    per_variant: dict[tuple[str, tuple[str, ...]], set] = defaultdict(set)
    per_variant_events: dict[tuple[str, tuple[str, ...]], int] = defaultdict(int)
    provider = {"delivered": 0}
    hours = [{"hour": h, "opens_human": 0, "opens_machine": 0, "clicks_human": 0, "clicks_machine": 0}
             for h in range(48)]
    start = edition.created_at
    extra_unique = defaultdict(int)  # from stats_counts
    for e in events:
        machine = bool(e.machine) or e.id in bursts
        s = side(machine)
        who = e.reader or ("event", e.id)
        if e.kind in provider:
            provider[e.kind] += 1
            continue
        hour = int((e.at - start).total_seconds() // 3600)
        if e.kind == "open":
            opens[s].add(who)
            open_events[s] += 1
            if e.via_proxy and not machine:
                via_proxy.add(who)
                via_proxy_events += 1
            if 0 <= hour < 48:
                hours[hour][f"opens_{s}"] += 1
        elif e.kind == "click":
            clicks[s].add(who)
            click_events[s] += 1
            if e.link is not None:
                per_link[e.link][s].add(who)
                per_link[e.link][f"{s}_events"] += 1
            if not machine:
                fields = tuple(f for f in (e.fields or "").split(",") if f)
                part = e.part or "html"
                per_variant[(part, fields)].add(who)
                per_variant_events[(part, fields)] += 1
            if 0 <= hour < 48:
                hours[hour][f"clicks_{s}"] += 1
    for c in counted:
        s = side(c.machine)
        if c.kind == "open":
            extra_unique[("open", s)] += c.readers
            open_events[s] += c.events
        elif c.kind == "click":
            extra_unique[("click", s)] += c.readers
            click_events[s] += c.events
            if c.link is not None:
                per_link[c.link][f"{s}_events"] += c.events
                per_link[c.link].setdefault(f"{s}_pruned", 0)
                per_link[c.link][f"{s}_pruned"] += c.readers
        elif c.kind in provider:
            provider[c.kind] += c.events
        if c.hour is not None and 0 <= c.hour < 48 and c.kind in ("open", "click"):
            hours[c.hour][f"{c.kind}s_{s}"] += c.events

    def link_unique(entry: dict, s: str) -> int:
        return len(entry[s]) + entry.get(f"{s}_pruned", 0)

    articles = []
    for a in content["articles"]:
        idx = [i for i, (_u, aid) in enumerate(links) if aid == a["id"]]
        human = set().union(*(per_link[i]["human"] for i in idx)) if idx else set()
        machine = set().union(*(per_link[i]["machine"] for i in idx)) if idx else set()
        articles.append({
            "id": a["id"], "title": a["title"], "url": a["url"], "fields": a["fields"],
            "clicks_human": len(human) + sum(per_link[i].get("human_pruned", 0) for i in idx),
            "clicks_machine": len(machine) + sum(per_link[i].get("machine_pruned", 0) for i in idx),
            "click_events_human": sum(per_link[i]["human_events"] for i in idx),
            "click_events_machine": sum(per_link[i]["machine_events"] for i in idx),
        })
    fields_out = []
    for slug, name in field_names.items():
        mine = [x for x in articles if slug in x["fields"]]
        fields_out.append({"slug": slug, "name": name,
                           "clicks_human": sum(x["clicks_human"] for x in mine),
                           "clicks_machine": sum(x["clicks_machine"] for x in mine)})
    link_rows = [{"index": i, "url": u, "article_id": aid,
                  "clicks_human": link_unique(per_link[i], "human"),
                  "clicks_machine": link_unique(per_link[i], "machine")} for i, (u, aid) in enumerate(links)]
    variants = []
    # By the part the link was in: a text-only reader has only the text part.
    for fmt, fields in sorted(set(delivered_by_variant) | set(per_variant)):
        delivered_n = delivered_by_variant.get((fmt, fields), 0)
        readers = per_variant.get((fmt, fields), set())
        variants.append({"format": fmt, "fields": list(fields), "delivered": delivered_n,
                         "clicks_human": len(readers), "click_events_human": per_variant_events[(fmt, fields)],
                         "click_through": _ratio(len(readers), delivered_n)})
    delivered = status_counts.get("sent", 0)
    html_delivered = delivered - text_only_delivered
    opens_human = len(opens["human"]) + extra_unique[("open", "human")]
    clicks_human = len(clicks["human"]) + extra_unique[("click", "human")]
    return {
        "edition": {"id": edition.id, "publication": edition.publication, "number": edition.number,
                    "created_at": edition.created_at.isoformat(), "tracking": mode},
        "delivered": delivered,
        "failed": status_counts.get("failed", 0),
        "bounced": status_counts.get("failed", 0),
        "unsubscribed_after": unsubscribed,
        "provider_delivered": provider["delivered"],
        "opens": {
            "human": opens_human,
            "human_via_proxy": len(via_proxy),
            "machine": len(opens["machine"]) + extra_unique[("open", "machine")],
            "unknown": text_only_delivered,
            "human_events": open_events["human"],
            "machine_events": open_events["machine"],
            "rate_human": _ratio(opens_human, html_delivered),
        },
        "clicks": {
            "human": clicks_human,
            "machine": len(clicks["machine"]) + extra_unique[("click", "machine")],
            "human_events": click_events["human"],
            "machine_events": click_events["machine"],
            "rate_human": _ratio(clicks_human, delivered),
        },
        "articles": articles,
        "fields": fields_out,
        "links": link_rows,
        "variants": variants,
        "hours": hours,
    }
