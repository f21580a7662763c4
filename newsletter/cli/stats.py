"""``newsletter edition report N`` and ``newsletter stats prune``: reading statistics (issue 15).

The numbers come from :func:`newsletter.store.stats.edition_report`; this
module only prints them (text, ``--json``, ``--csv FILE``, ``--svg FILE``)."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import click
from sqlalchemy import func, select

from .. import stats as reading
from ..csvio import write_csv
from ..stats import CSV_HEADER, hours_svg, report_csv_rows
from ..store import stats as sq
from ..store.editions import resolve_edition
from ..store.tables import editions, stats_events, utcnow
from . import App, main, pass_app
from .editions import edition


def report_for(app: App, number: int, publication: str | None) -> dict:
    row = resolve_edition(app.engine, app.config, number, publication)
    return reading.edition_report(app.engine, app.config, row)


@edition.command("report")
@click.argument("number", type=int)
@click.option("--publication", help="When several publications have an edition N.")
@click.option("--json", "as_json", is_flag=True, help="The whole report as JSON (keys: see README).")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the per-article clicks to FILE (UTF-8 with BOM, for Excel).")
@click.option("--svg", "svg_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the 48-hour curve to FILE as an SVG chart.")
@pass_app
def edition_report(app: App, number, publication, as_json, csv_path, svg_path):
    """Was edition NUMBER read?  Delivered, opens and clicks — human and machine apart."""
    rep = report_for(app, number, publication)
    if svg_path is not None:
        svg_path.write_text(hours_svg(rep), encoding="utf-8")
        click.echo(f"{svg_path}: the 48-hour curve", err=True)
    if csv_path is not None:
        n = write_csv(csv_path, CSV_HEADER, report_csv_rows(rep), excel=True)
        click.echo(f"{csv_path}: {n} articles", err=True)
    if as_json:
        click.echo(json.dumps(rep, ensure_ascii=False, indent=1))
        return
    if csv_path is not None or svg_path is not None:
        return
    e, o, c = rep["edition"], rep["opens"], rep["clicks"]
    click.echo(f"edition:      {e['publication']} 第{e['number']}号 (tracking: {e['tracking']})")
    click.echo(f"delivered:    {rep['delivered']}   bounced: {rep['bounced']}   "
               f"unsubscribed after: {rep['unsubscribed_after']}")
    click.echo(f"opens:        human {o['human']} (via proxy {o['human_via_proxy']})   machine {o['machine']}   "
               f"unknown (text only) {o['unknown']}")
    click.echo(f"clicks:       human {c['human']}   machine {c['machine']}")
    for a in rep["articles"]:
        click.echo(f"  {a['clicks_human']:>5} human {a['clicks_machine']:>5} machine  {a['title']}")
    for f in rep["fields"]:
        click.echo(f"  field {f['name']}: human {f['clicks_human']}, machine {f['clicks_machine']}")


@main.group()
def stats() -> None:
    """Reading statistics: retention."""


@stats.command("prune")
@click.option("--dry-run", is_flag=True, help="Only say how many events would be folded; change nothing.")
@pass_app
def stats_prune(app: App, dry_run):
    """Fold events older than each publication's tracking_retention into counts and delete them."""
    retention = {p.slug: p.tracking_retention for p in app.config.publications}
    default = 400 * 86400.0
    now = utcnow()
    groups: dict[float, list[int]] = defaultdict(list)
    with app.engine.connect() as conn:
        for ed in conn.execute(select(editions.c.id, editions.c.publication)):
            groups[retention.get(ed.publication, default)].append(ed.id)
        if dry_run:
            from datetime import timedelta

            n = 0
            for seconds, ids in groups.items():
                n += conn.execute(select(func.count()).select_from(stats_events).where(
                    stats_events.c.edition_id.in_(ids), stats_events.c.at < now - timedelta(seconds=seconds))).scalar()
            click.echo(f"would fold and delete {n} events")
            return
    n = sq.prune(app.engine, groups, now)
    click.echo(f"folded and deleted {n} events")
