"""``newsletter demo``: the whole pipeline on a laptop, from a fresh clone.

It takes the same road as ``edition send``, never a shortcut: the provider is
built first (a bad ``[provider]`` table stops it before anything is written), the
preflight checks of ``edition check`` run before the edition is created (an error
stops it, exit 1), and a message that fails is one line on stderr, with exit 1
and the commands that list and retry the failures.

The samples are ``subscribers/sample.csv`` and ``articles/sample.json`` beside
config.toml when they are there, else the copies packaged with newsletter
(``newsletter/samples``, symlinks to the same files in a source tree), so an
installed package with nothing but a config.toml runs the demo too.
"""

from __future__ import annotations

from pathlib import Path

import click

from .. import articles as arts
from .. import subscribers as subs
from ..delivery import deliver
from ..editions import creation
from ..providers import open_provider
from ..store import editions as q
from ..store import ensure_database, make_engine, upgrade
from ..store.editions import load_content
from . import App, main, pass_app
from .editions import _preflight, report_failures

# Where the web console is once `newsletter serve` runs with its defaults, and how to get in.
CONSOLE = ("console:     http://127.0.0.1:8000/admin/  (newsletter serve; first admin: "
           "newsletter user add NAME --email ADDR --role admin)")


@main.command()
@click.option("--publication", help="Which publication to send (default: the first in config.toml).")
@pass_app
def demo(app: App, publication):
    """Initialise the database, import the sample subscribers and articles, and send an edition.

    Uses config.toml as it is (by default SQLite in var/ and the file outbox in
    var/outbox/). Running it again is harmless: the samples are already in, so it
    says there is nothing new to send.
    """
    config = app.config
    open_provider(config).close()  # a bad [provider] table fails before anything is written
    ensure_database(config.storage_url)
    engine = make_engine(config.storage_url)
    upgrade(engine)
    config.create_secret()
    app._engine = engine
    base = config.base_dir

    sample_csv = _sample(config.subscribers_dir / "sample.csv")
    report = subs.import_csv(engine, config, sample_csv)
    click.echo(f"subscribers: {_shown(sample_csv, base)}: "
               f"{report.created} new, {report.updated} updated ({report.rows} rows)")
    for problem in report.problems:
        click.echo(f"  error: {problem}", err=True)

    sample_articles = _sample(base / "articles" / "sample.json")
    items = arts.read_source(str(sample_articles), config)
    areport = arts.import_items(engine, config, items, source="demo")
    click.echo(f"articles:    {_shown(sample_articles, base)}: {areport.created} new, {areport.updated} updated, "
               f"{areport.unchanged} unchanged")
    for problem in areport.errors:
        click.echo(f"  error: {problem}", err=True)

    pub = config.publication(publication) if publication else config.publications[0]
    plan = _preflight(app, pub, force=False)
    with engine.connect() as conn:
        row = q.unfinished(conn, pub.slug)
    if row is None:
        created = plan and creation.create_edition(engine, config, pub, now=plan.when, checked=plan.content)
        if not created:
            click.echo(f"edition:     {pub.slug}: nothing new to send — every sample article is already in an "
                       "earlier edition. Add one with 'newsletter article add' and run 'newsletter edition send'.")
            click.echo(CONSOLE)
            return
        with engine.connect() as conn:
            row = q.get_edition(conn, created.edition_id)
    result = deliver(engine, config, row.id, variants=plan.renders if plan is not None else None)
    with engine.connect() as conn:
        counts = q.counts(conn, row.id)
    content = load_content(row)
    click.echo(f"edition:     {content['publication']['title']} 第{row.number}号, {len(content['articles'])} articles, "
               f"{result.renders} variants rendered")
    click.echo(f"delivered:   {counts['sent']} mails sent, {counts['skipped']} skipped, {counts['failed']} failed, "
               f"{counts['pending']} pending")
    if config.provider.kind == "file":
        outbox = Path(config.provider.options.get("path", "var/outbox"))
        outbox = outbox if outbox.is_absolute() else base / outbox
        click.echo(f"outbox:      {outbox}  (one .eml file per mail; open one in any mail client)")
    click.echo(f"preview:     newsletter edition preview {pub.slug} --edition {row.number} --format text")
    click.echo(f"status:      newsletter edition status {row.number}")
    click.echo(CONSOLE)
    if report_failures(result, row.number):
        raise SystemExit(1)


SAMPLES = Path(__file__).resolve().parent.parent / "samples"


def _sample(own: Path) -> Path:
    """The project's sample file, else the packaged one of the same name."""
    return own if own.exists() else SAMPLES / own.name


def _shown(path: Path, base: Path) -> str:
    return str(path.relative_to(base)) if path.is_relative_to(base) else str(path)
