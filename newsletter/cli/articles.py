"""``newsletter article …``: the editors' queue."""

from __future__ import annotations

from pathlib import Path

import click

from .. import articles as arts
from ..errors import InputError
from ..store import articles as q
from . import App, field_option, main, pass_app


@main.group()
def article() -> None:
    """Queue, import and manage articles."""


def _fail_on(where: str, exc: ValueError):
    raise InputError(f"{where}: {exc}")


def _print_row(app: App, row) -> None:
    flags = ("📌" if row.pinned else "") + (f"+{row.priority}" if row.priority else "")
    click.echo(
        f"{row.id}\t{row.status}\t{row.fields}\t{app.local_time(row.publish_at)}\t{row.title}"
        + (f"\t{flags}" if flags else "")
    )


@article.command("add")
@click.option("--title", required=True, help="Headline.")
@click.option("--url", required=True, help="Link to the full article (http/https).")
@click.option("--field", "fields", multiple=True, required=True, help="Field slug or name; repeat for several.")
@click.option("--summary", default="", help="Short summary shown in the digest.")
@click.option("--body-file", type=click.Path(dir_okay=False, path_type=Path), help="Body, Markdown or HTML.")
@click.option("--body-format", type=click.Choice(["markdown", "html"]), help="Default: by the file's extension.")
@click.option("--author", default="")
@click.option("--publish-at", help="Embargo, ISO 8601 (no offset: the site's time zone).")
@click.option("--priority", type=int, default=0, help="Higher comes first (after pinned).")
@click.option("--pin", is_flag=True, help="Always first in its section.")
@click.option("--guid", help="Stable id; re-adding the same guid (or url) updates.")
@click.option("--draft", is_flag=True, help="Keep out of editions until queued with 'article edit --status queued'.")
@pass_app
def article_add(
    app: App, title, url, fields, summary, body_file, body_format, author, publish_at, priority, pin, guid, draft
):
    """Queue one article."""
    body = ""
    if body_file:
        try:
            body = body_file.read_text(encoding="utf-8-sig")
        except FileNotFoundError:
            raise InputError(f"{body_file}: no such file") from None
        except UnicodeDecodeError:
            raise InputError(f"{body_file}: not valid UTF-8") from None
        body_format = body_format or ("html" if body_file.suffix.lower() in (".html", ".htm") else "markdown")
    raw = {
        "title": title, "url": url, "fields": list(fields), "summary": summary, "body": body,
        "body_format": body_format or "markdown", "author": author, "publish_at": publish_at,
        "priority": priority, "pinned": pin, "guid": guid, "status": "draft" if draft else "queued",
        "source": "cli",
    }
    try:
        values = arts.validate(raw, app.config)
    except ValueError as exc:
        _fail_on("article", exc)
    with app.engine.begin() as conn:
        try:
            action, article_id = arts.save(conn, values)
        except ValueError as exc:
            _fail_on("article", exc)
    click.echo(f"{action} article {article_id}: {values['title']}")


@article.command("import")
@click.argument("source")
@click.option("--strict", is_flag=True, help="Import nothing if any item is bad.")
@click.option("--field", "fields", multiple=True, help="Field for items that name none (e.g. feed entries).")
@click.option("--dry-run", is_flag=True, help="Check and report; write nothing.")
@pass_app
def article_import(app: App, source, strict, fields, dry_run):
    """Import articles from FILE_OR_URL: JSON, CSV, Markdown with front matter, RSS/Atom."""
    config = app.config
    for f in fields:
        field_option(config, f)
    items = arts.read_source(source, config)
    report = arts.import_items(
        app.engine, config, items, source=source, strict=strict, default_fields=fields, dry_run=dry_run
    )
    for problem in report.errors:
        click.echo(f"error: {problem}", err=True)
    if strict and report.errors:
        click.echo(f"nothing imported: {len(report.errors)} bad item(s) (--strict)", err=True)
        raise SystemExit(1)
    verb = "would import" if dry_run else "imported"
    click.echo(
        f"{verb} {source}: {report.created} new, {report.updated} updated, {report.unchanged} unchanged"
        + (f", {len(report.errors)} rejected" if report.errors else "")
    )
    if report.errors:
        raise SystemExit(1)


@article.command("list")
@click.option("--status", type=click.Choice(q.STATUSES))
@click.option("--field", help="Field slug or name.")
@pass_app
def article_list(app: App, status, field):
    """One article per line: id, status, fields, embargo, title."""
    slug = field_option(app.config, field) if field else None
    with app.engine.connect() as conn:
        for row in q.list_articles(conn, status=status, field=slug):
            _print_row(app, row)


def _get(app: App, conn, article_id: int):
    row = q.get(conn, article_id)
    if row is None:
        raise InputError(f"article {article_id}: no such article")
    return row


@article.command("show")
@click.argument("article_id", type=int)
@pass_app
def article_show(app: App, article_id):
    """Everything about one article."""
    with app.engine.connect() as conn:
        row = _get(app, conn, article_id)
    names = ", ".join(f"{app.config.field(s).name} ({s})" for s in row.fields.split(",") if s in app.config.field_slugs)
    for label, value in [
        ("id", row.id), ("title", row.title), ("url", row.url), ("status", row.status), ("fields", names),
        ("author", row.author), ("publish_at", app.local_time(row.publish_at)), ("priority", row.priority),
        ("pinned", "yes" if row.pinned else "no"), ("guid", row.guid or ""), ("source", row.source),
        ("created", app.local_time(row.created_at)), ("updated", app.local_time(row.updated_at)),
        ("summary", row.summary),
    ]:
        click.echo(f"{label + ':':12}{value}")
    if row.body:
        click.echo(f"body ({row.body_format}):")
        click.echo(row.body)


@article.command("edit")
@click.argument("article_id", type=int)
@click.option("--title")
@click.option("--url")
@click.option("--summary")
@click.option("--field", "fields", multiple=True, help="Replaces the fields; repeat for several.")
@click.option("--body-file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--author")
@click.option("--publish-at", help="ISO 8601, or 'none' to lift the embargo.")
@click.option("--priority", type=int)
@click.option("--pin/--unpin", default=None)
@click.option("--status", type=click.Choice(["draft", "queued"]))
@pass_app
def article_edit(
    app: App, article_id, title, url, summary, fields, body_file, author, publish_at, priority, pin, status
):
    """Change an article that has not been published yet (an unsent edition carrying it
    is updated; an approved one goes back to draft)."""
    change: dict = {}
    for key, value in (("title", title), ("url", url), ("summary", summary), ("author", author),
                       ("priority", priority), ("pinned", pin), ("status", status)):
        if value is not None:
            change[key] = value
    if fields:
        change["fields"] = list(fields)
    if publish_at is not None:
        change["publish_at"] = None if publish_at.lower() == "none" else publish_at
    if body_file:
        try:
            change["body"] = body_file.read_text(encoding="utf-8-sig")
        except (FileNotFoundError, UnicodeDecodeError) as exc:
            raise InputError(f"{body_file}: cannot read ({exc.__class__.__name__})") from None
        change["body_format"] = "html" if body_file.suffix.lower() in (".html", ".htm") else "markdown"
    try:
        changes, touched = arts.edit(app.engine, app.config, article_id, change, app.actor)
    except ValueError as exc:
        _fail_on(f"article {article_id}", exc)
    click.echo(f"article {article_id}: " + (", ".join(changes) + " changed" if changes else "nothing changed"))
    for line in touched:
        click.echo(f"  {line}")


@article.command("withdraw")
@click.argument("article_id", type=int)
@pass_app
def article_withdraw(app: App, article_id):
    """Take an article out of the queue (it stays in editions already sent)."""
    was, touched = arts.withdraw(app.engine, app.config, article_id, app.actor)
    click.echo(f"article {article_id}: withdrawn (was {was})")
    for line in touched:
        click.echo(f"  {line}")
