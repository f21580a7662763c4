"""``newsletter edition check PUB``: preflight, without sending or changing anything."""

from __future__ import annotations

import click

from .. import preflight
from . import App, pass_app
from .editions import edition


@edition.command("check")
@click.argument("publication", required=False)
@click.option("-q", "--quiet", is_flag=True, help="Only errors and warnings.")
@pass_app
def edition_check(app: App, publication, quiet):
    """Check what 'edition send PUBLICATION' would send now; sends and changes nothing.

    Renders every variant the send needs (the unfinished edition's pending
    deliveries, else the next edition for the active subscribers) and reports
    per variant: HTML size against Gmail's clipping limit, characters mapped
    or not mappable in ISO-2022-JP, text lines over the width, subject length,
    broken or non-https links, empty sections.  Exit code 1 when something
    would reach readers broken (an error); warnings alone exit 0.
    """
    if not publication:
        if len(app.config.publications) != 1:
            raise click.UsageError("name the publication: newsletter edition check PUB")
        publication = app.config.publications[0].slug
    pub = app.config.publication(publication)
    plan = preflight.plan_send(app.engine, app.config, pub)
    if plan is None:
        click.echo(f"{pub.slug}: nothing new to send (no queued articles past their embargo)")
        return
    which = "unfinished edition, resumed by 'edition send'" if plan.resumed else "next edition"
    if plan.unsent_status:
        which = f"{plan.unsent_status}, started by 'edition send'"
    click.echo(f"{pub.slug} 第{plan.number}号 ({which}): {len(plan.content['articles'])} articles, "
               f"{len(plan.variants)} variant(s), {sum(plan.variants.values())} reader(s)")
    findings = preflight.check_plan(app.config, pub, plan) + preflight.deliverability(app.engine, app.config)
    for line in preflight.format_findings(findings, verbose=not quiet):
        click.echo(line)
    verdict = preflight.summary(findings)
    if preflight.has_errors(findings):
        click.echo(f"{verdict}: this edition would reach readers broken "
                   "(fix it, or send anyway with 'edition send --force')", err=True)
        raise SystemExit(1)
    click.echo(f"{verdict}: ready to send")
