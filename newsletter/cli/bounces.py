"""``newsletter bounces …``: bounce and complaint intake for SMTP set-ups."""

from __future__ import annotations

from pathlib import Path

import click

from .. import bounces as b
from . import App, main, pass_app


@main.group("bounces")
def bounces_group() -> None:
    """Process bounces, complaints and mailed unsubscribe requests."""


@bounces_group.command("process")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--dry-run", is_flag=True, help="Report what would change; write nothing.")
@pass_app
def bounces_process(app: App, path: Path, dry_run: bool) -> None:
    """Read a Maildir folder, an mbox file or one .eml file.

    RFC 3464 delivery status notifications: 5.1.x (the address does not
    work) → bounced after [provider] hard_bounce_limit of them (default 1);
    4.x.x and other 5.x.x count as soft bounces ([bounces] soft_limit within
    soft_window suppress it).  RFC 5965 (ARF) reports → complained.  A mail to
    [sender] unsubscribe_mailto with the subject "unsubscribe <token>" (the
    List-Unsubscribe mailto of every mail) → unsubscribed.  Processing the
    same mailbox again changes nothing.
    """
    n, report = b.process_path(app.engine, app.config, path, dry_run=dry_run)
    for problem in report.problems:
        click.echo(f"error: {problem}", err=True)
    for email in report.suppressed:
        click.echo(f"{'would suppress' if dry_run else 'suppressed'} {email}")
    click.echo(f"{'would process' if dry_run else 'processed'} {n} messages: {report.line()}")
    if report.problems:
        raise SystemExit(1)
