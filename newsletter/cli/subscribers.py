"""``newsletter subscriber …``: the operators' lists."""

from __future__ import annotations

from pathlib import Path

import click

from .. import subscribers as subs
from ..config import CHARSETS, FORMATS
from ..csvio import ENCODINGS
from ..store import subscribers as q
from . import App, field_option, main, pass_app


@main.group()
def subscriber() -> None:
    """Add, import, export and manage subscribers."""


@subscriber.command("add")
@click.argument("email")
@click.option("--fields", help="Comma-separated slugs or names (default: all fields).")
@click.option("--name", default="")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="html", show_default=True)
@click.option("--charset", type=click.Choice(CHARSETS), help="Override the publication's charset.")
@click.option("--publications", help="Comma-separated publication slugs (default: all that share a field).")
@click.option("--pending", is_flag=True, help="Add as pending (not mailed until confirmed).")
@pass_app
def subscriber_add(app: App, email, fields, name, fmt, charset, publications, pending):
    """Add one subscriber (an operator vouches for the consent)."""
    action, values = subs.add(
        app.engine, app.config,
        {"email": email, "fields": fields, "name": name, "format": fmt, "charset": charset,
         "publications": publications},
        status="pending" if pending else "active", source="cli",
    )
    click.echo(f"{action} {values['email']} ({values['fields']}, {values['format']})")


@subscriber.command("import")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--dry-run", is_flag=True, help="Report row by row; write nothing.")
@click.option("--encoding", type=click.Choice(ENCODINGS), default="auto", show_default=True)
@click.option("--strict", is_flag=True, help="Import nothing if any row is bad.")
@click.option("--fields", "default_fields",
              help="Fields (slugs or names) for rows that give none; needed when the file has no fields column.")
@pass_app
def subscriber_import(app: App, file, dry_run, encoding, strict, default_fields):
    """Import a CSV (UTF-8 with or without BOM, or Shift_JIS/CP932 from Excel).

    Columns: email/メールアドレス (required), fields/分野 (required unless --fields),
    name/氏名, format/形式, charset, publications; Japanese names such as 希望分野,
    配信形式, Eメール, お名前 are known too, and an unknown column is reported.
    Duplicates are merged; addresses that unsubscribed, bounced or complained are
    left as they are. The file is streamed, in one transaction.
    """

    def say(kind: str, text: str) -> None:
        if kind in ("error", "warning"):
            click.echo(f"{kind}: {text}", err=True)
        elif kind == "normalised" or dry_run:
            click.echo(f"note: {text}")

    report = subs.import_csv(
        app.engine, app.config, file, encoding=encoding, dry_run=dry_run, strict=strict,
        default_fields=default_fields, listener=say,
    )
    if strict and report.rejected:
        click.echo(f"nothing imported: {report.rejected} bad row(s) (--strict)", err=True)
        raise SystemExit(1)
    verb = "would import" if dry_run else "imported"
    click.echo(
        f"{verb} {file}: {report.rows} rows, {report.created} new, {report.updated} updated, "
        f"{report.merged_in_file} merged duplicates, {report.suppressed} left unsubscribed/bounced"
        + (f", {report.rejected} rejected" if report.rejected else "")
    )
    if report.rejected:
        raise SystemExit(1)


@subscriber.command("export")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--excel", is_flag=True,
              help="For Excel: Japanese headers, local times, a BOM and CRLF (re-imports as it is).")
@click.option("--status", type=click.Choice(q.STATUSES))
@pass_app
def subscriber_export(app: App, file, excel, status):
    """Write subscribers to a CSV (formula-injection safe); FILE is relative to the current folder."""
    n = subs.export_csv(app.engine, app.config, file, excel=excel, status=status)
    click.echo(f"exported {n} subscribers to {file}")


@subscriber.command("list")
@click.option("--status", type=click.Choice(q.STATUSES))
@click.option("--field", help="Field slug or name.")
@pass_app
def subscriber_list(app: App, status, field):
    """One subscriber per line: address, status, fields, format, name."""
    slug = field_option(app.config, field) if field else None
    with app.engine.connect() as conn:
        for row in q.list_subscribers(conn, status=status, field=slug):
            click.echo(f"{row.email}\t{row.status}\t{row.fields}\t{row.format}\t{row.name}")


@subscriber.command("show")
@click.argument("email")
@pass_app
def subscriber_show(app: App, email):
    """Address, status, fields, format, charset and the consent record."""
    row, consents = subs.show(app.engine, email)
    names = ", ".join(
        f"{app.config.field(s).name} ({s})" if s in app.config.field_slugs else s for s in row.fields.split(",")
    )
    for label, value in [
        ("email", row.email), ("status", row.status), ("name", row.name), ("fields", names),
        ("format", row.format), ("charset", row.charset or "(publication default)"),
        ("publications", ", ".join(subs.publications_of(app.config, row)) or "(none)"),
        ("created", app.local_time(row.created_at)), ("updated", app.local_time(row.updated_at)),
    ]:
        click.echo(f"{label + ':':14}{value}")
    click.echo("consent:")
    _print_consents(app, consents)


def _print_consents(app: App, consents) -> None:
    for c in consents:
        extra = "".join(
            f" {k}={v}"
            for k, v in (("ip", c.ip), ("ua", c.user_agent), ("wording", c.wording_version), ("detail", c.detail))
            if v
        )
        click.echo(f"  {app.local_time(c.at)}  {c.event:<12} {c.source}{extra}")


@subscriber.command("consent")
@click.argument("email")
@pass_app
def subscriber_consent(app: App, email):
    """The consent record of one address (kept after unsubscribe)."""
    row, consents = subs.show(app.engine, email)
    click.echo(f"{row.email} ({row.status})")
    _print_consents(app, consents)


@subscriber.command("set")
@click.argument("email")
@click.option("--fields", help="Replace the fields (comma-separated slugs or names).")
@click.option("--name")
@click.option("--format", "fmt", type=click.Choice(FORMATS))
@click.option("--charset", type=click.Choice([*CHARSETS, "default"]))
@click.option("--publications", help="Comma-separated slugs, or 'all'.")
@pass_app
def subscriber_set(app: App, email, fields, name, fmt, charset, publications):
    """Change a subscriber's fields, name, format, charset or publications."""
    given = (("fields", fields), ("name", name), ("format", fmt), ("charset", charset), ("publications", publications))
    changes = {k: v for k, v in given if v is not None}
    if not changes:
        raise click.UsageError("nothing to change: give --fields, --name, --format, --charset or --publications")
    values = subs.update(app.engine, app.config, email, changes)
    click.echo(f"{subs.normalize_email(email, lookup=True)}: " + ", ".join(f"{k}={v}" for k, v in values.items()))


@subscriber.command("unsubscribe")
@click.argument("email")
@pass_app
def subscriber_unsubscribe(app: App, email):
    """Stop all mail to EMAIL now (pending deliveries are cancelled; the consent record stays)."""
    before, cancelled = subs.set_status(app.engine, email, "unsubscribed", source="cli")
    if before in q.SUPPRESSED:  # first reason wins: a bounced address stays bounced
        click.echo(f"{subs.normalize_email(email)}: already {before} ({cancelled} pending deliveries cancelled)")
        return
    click.echo(f"{subs.normalize_email(email)}: unsubscribed (was {before}; {cancelled} pending deliveries cancelled)")


@subscriber.command("reactivate")
@click.argument("email")
@click.option("--reason", required=True, metavar="TEXT",
              help="Why mail is resumed (kept in the consent history), e.g. 'asked by phone on 12/1'.")
@pass_app
def subscriber_reactivate(app: App, email, reason):
    """Resume mail to an unsubscribed or bounced EMAIL (never after a complaint)."""
    before = subs.reactivate(app.engine, email, reason, app.actor)
    click.echo(f"{subs.normalize_email(email, lookup=True)}: active again (was {before}); reason recorded")


@subscriber.command("delete")
@click.argument("email")
@click.option("--yes", is_flag=True, help="Do not ask.")
@pass_app
def subscriber_delete(app: App, email, yes):
    """Erase EMAIL and its consent record (for a data-erasure request; use unsubscribe otherwise)."""
    if not yes:
        click.confirm(f"Erase {email} and its consent record?", abort=True)
    subs.delete(app.engine, email)
    click.echo(f"{subs.normalize_email(email)}: deleted")
