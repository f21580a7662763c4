"""``newsletter subscriber …``: the operators' lists."""

from __future__ import annotations

from pathlib import Path

import click

from .. import subscribers as subs
from ..config import CHARSETS, FORMATS
from ..csvio import ENCODINGS
from ..errors import InputError
from ..store import subscribers as q
from . import App, main, pass_app


@main.group()
def subscriber() -> None:
    """Add, import, export and manage subscribers."""


def _csv_path(app: App, path: Path) -> Path:
    # A bare file name means the subscribers/ folder, the default place for lists.
    if not path.is_absolute() and path.parent == Path(".") and not path.exists():
        return app.config.subscribers_dir / path
    return path


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
@pass_app
def subscriber_import(app: App, file, dry_run, encoding, strict):
    """Import a CSV (UTF-8 with or without BOM, or Shift_JIS/CP932 from Excel).

    Columns: email/メールアドレス (required), name/氏名, fields/分野, format/形式,
    charset, publications. Duplicates are merged; addresses that unsubscribed,
    bounced or complained are left as they are.
    """
    report = subs.import_csv(
        app.engine, app.config, _csv_path(app, file), encoding=encoding, dry_run=dry_run, strict=strict
    )
    for problem in report.problems:
        click.echo(f"error: {problem}", err=True)
    if dry_run:
        for note in report.notes:
            click.echo(f"note: {note}")
    if strict and report.problems:
        click.echo(f"nothing imported: {len(report.problems)} bad row(s) (--strict)", err=True)
        raise SystemExit(1)
    verb = "would import" if dry_run else "imported"
    click.echo(
        f"{verb} {file}: {report.rows} rows, {report.created} new, {report.updated} updated, "
        f"{report.merged_in_file} merged duplicates, {report.suppressed} left unsubscribed/bounced"
        + (f", {len(report.problems)} rejected" if report.problems else "")
    )
    if report.problems:
        raise SystemExit(1)


@subscriber.command("export")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--excel", is_flag=True, help="Add a BOM and CRLF so Excel shows Japanese correctly.")
@click.option("--status", type=click.Choice(q.STATUSES))
@pass_app
def subscriber_export(app: App, file, excel, status):
    """Write subscribers to a CSV (formula-injection safe)."""
    target = _csv_path(app, file)
    n = subs.export_csv(app.engine, target, excel=excel, status=status)
    click.echo(f"exported {n} subscribers to {target}")


@subscriber.command("list")
@click.option("--status", type=click.Choice(q.STATUSES))
@click.option("--field", help="Field slug or name.")
@pass_app
def subscriber_list(app: App, status, field):
    """One subscriber per line: address, status, fields, format, name."""
    slug = None
    if field:
        slug = app.config.resolve_field(field)
        if slug is None:
            raise InputError(f"--field: unknown field '{field}'")
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
    click.echo(f"{subs.normalize_email(email)}: " + ", ".join(f"{k}={v}" for k, v in values.items()))


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
