"""``newsletter edition …``: assemble, preview, send and inspect editions."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..config import load_notice
from ..delivery import counts_text, deliver, edition_eta, summarize
from ..editions import creation, preview, state
from ..editions.assemble import VariantKey
from ..errors import InputError
from ..providers import check_provider
from ..store import editions as q
from ..store.editions import load_content, resolve_edition
from ..store.tables import utcnow
from ..subscribers import normalize_email, parse_fields
from . import App, main, pass_app

HASH_SHOWN = 16  # hex digits of a content hash shown and accepted by --hash


@main.group()
def edition() -> None:
    """Create, preview, send and inspect editions (第N号)."""


@edition.command("create")
@click.argument("publication")
@pass_app
def edition_create(app: App, publication):
    """Make the next edition of PUBLICATION a draft from the queue (sends nothing).

    Its articles are reserved for it; adjust it with add-article, remove-article,
    order and set, preview it, then approve (and schedule) it."""
    pub = app.config.publication(publication)
    draft = state.create_draft(app.engine, app.config, pub, app.actor)
    if draft is None:
        click.echo(f"{pub.slug}: nothing new to send (no queued articles past their embargo)")
        return
    click.echo(f"{pub.slug} 第{draft.number}号: draft with {draft.articles} articles "
               f"(content {draft.content_hash[:HASH_SHOWN]})")
    click.echo(f"  preview: newsletter edition preview {pub.slug} --edition {draft.number}")


def _send(app: App, edition_row, plan=None) -> int:
    """Deliver one edition with a progress bar on a terminal, log lines otherwise.
    ``plan``: what preflight checked; the engine sends its renders."""
    import logging
    import time

    log = logging.getLogger("newsletter")
    with app.engine.connect() as conn:
        total = sum(q.counts(conn, edition_row.id).values())
        done_before = total - q.pending_count(conn, edition_row.id)
    label = f"{edition_row.publication} 第{edition_row.number}号"
    interactive = sys.stdout.isatty()
    started = time.monotonic()
    last_log = [started]
    progress = None
    if interactive:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("sent {task.fields[sent]} failed {task.fields[failed]} {task.fields[rate]}/s"),
                            TimeRemainingColumn())
        task = progress.add_task(label, total=total, completed=done_before, sent=0, failed=0, rate="-")
        progress.start()

    def on_batch(report):
        handled = report.sent + report.failed + report.deferred + report.unknown
        if progress is not None:
            rate = f"{handled / max(time.monotonic() - started, 1e-6):.0f}"
            progress.update(task, completed=done_before + handled, sent=report.sent, failed=report.failed, rate=rate)
        elif time.monotonic() - last_log[0] >= 5:
            last_log[0] = time.monotonic()
            log.info("%s: sent %d, failed %d, deferred %d of %d", label, report.sent, report.failed,
                     report.deferred, total - done_before)

    try:
        report = deliver(app.engine, app.config, edition_row.id, on_batch=on_batch, shared=True,
                         variants=plan.renders if plan is not None else None)
    finally:
        if progress is not None:
            progress.stop()
    done = summarize(app.engine, edition_row.id, report)
    counts, retry = done.counts, done.next_retry
    click.echo(f"{done.label}: {done.text}")
    report_failures(report, edition_row.number)
    code = 1 if report.failed else 0  # a failed message is something to look at, not a success
    if report.bounced:
        click.echo(f"  {report.bounced} addresses marked bounced")
    if report.paused:
        click.echo(f"  edition paused: {report.paused}", err=True)
        return 1
    if report.waiting_until:
        click.echo(f"  {report.waiting_for or 'quota reached'}: sending resumes after "
                   f"{app.local_time(report.waiting_until)}")
    elif counts["pending"]:
        click.echo(f"  {counts['pending']} pending; next retry at {app.local_time(retry)} — run 'edition send' "
                   "again or leave it to 'newsletter run'")
    return code


SHOWN_FAILURES = 20


def report_failures(report, number: int) -> bool:
    """One line on stderr per message this run failed (at most SHOWN_FAILURES), then
    where to see them all and how to retry; True when there were any."""
    if not report.failed:
        return False
    for failure in report.failures[:SHOWN_FAILURES]:
        click.echo(f"  failed: {failure}", err=True)
    more = report.failed - min(len(report.failures), SHOWN_FAILURES)
    click.echo(f"  {report.failed} failed{f' ({more} not shown)' if more > 0 else ''}: "
               f"'newsletter edition failures {number}' lists them, "
               f"'newsletter edition retry {number} --failed' sends the retryable ones again", err=True)
    return True


@edition.command("send")
@click.argument("publication", required=False)
@click.option("--edition", "number", type=int, help="Resume this edition number instead.")
@click.option("--publication", "pub_opt", help="Publication of --edition when there are several.")
@click.option("--test-to", metavar="ADDR", help="Send one variant to ADDR only; nothing is logged.")
@click.option("--fields", help="With --test-to: the variant's fields (default: all of the publication's).")
@click.option("--format", "fmt", type=click.Choice(["html", "text"]), default="html", help="With --test-to.")
@click.option("--force", is_flag=True, help="Send even when the preflight check ('edition check') finds errors.")
@click.option("--detach", is_flag=True,
              help="Create (or resume) the edition and return at once: the running workers deliver it.")
@pass_app
def edition_send(app: App, publication, number, pub_opt, test_to, fields, fmt, force, detach):
    """Deliver PUBLICATION: resume its unfinished edition, else create the next one and send it.

    Sending twice never mails anyone twice: every delivery is logged, and only
    pending ones are sent. The checks of 'edition check' run first; an error
    stops the send unless --force. With --detach the edition is left to the
    running 'newsletter run' / 'newsletter worker' processes; without it, this
    process sends too, sharing the deliveries and the limits with them.
    """
    if test_to:
        return _test_send(app, publication or pub_opt, number, test_to, fields, fmt)
    if number is not None:
        row = resolve_edition(app.engine, app.config, number, publication or pub_opt)
        if row.status in state.UNSENT:
            pub = app.config.publication(row.publication)
            check_provider(app.config)  # a bad provider config fails before anything starts
            plan = _preflight(app, pub, force, edition=row)
            row = _start(app, row, plan)
            raise SystemExit(_send(app, row, plan))
        if row.status != "sending":
            click.echo(f"{row.publication} 第{row.number}号 is {row.status}; nothing to send")
            return
        check_provider(app.config)
        plan = _preflight(app, app.config.publication(row.publication), force)
        raise SystemExit(_detach(app, row) if detach else _send(app, row, plan))
    if not publication:
        if len(app.config.publications) != 1:
            raise click.UsageError("name the publication: newsletter edition send PUB")
        publication = app.config.publications[0].slug
    pub = app.config.publication(publication)
    with app.engine.connect() as conn:
        row = q.unfinished(conn, pub.slug)
        ready = state.next_to_send(conn, pub) if row is None else None
    if row is None and ready is None and pub.approval == "required":
        raise InputError(f"{pub.slug}: nothing approved to send (approval = \"required\"): "
                         "edition create, preview, then edition approve")
    check_provider(app.config)  # a bad provider config fails before anything is created
    plan = _preflight(app, pub, force)
    if ready is not None:
        row = _start(app, ready, plan)
    if row is not None:
        if ready is None:
            click.echo(f"resuming {pub.slug} 第{row.number}号")
    else:
        # Exactly the content preflight checked, or a refusal if the queue changed since.
        created = plan and creation.create_edition(app.engine, app.config, pub, actor=app.actor, now=plan.when,
                                                  checked=plan.content)
        if not created:
            click.echo(f"{pub.slug}: nothing new to send (no queued articles past their embargo)")
            return
        click.echo(f"created {pub.slug} 第{created.number}号: {created.articles} articles, "
                   f"{created.pending} to send, {created.skipped} skipped (nothing in their fields)")
        with app.engine.connect() as conn:
            row = q.get_edition(conn, created.edition_id)
    raise SystemExit(_detach(app, row) if detach else _send(app, row, plan))


def _detach(app: App, row) -> int:
    """--detach: the edition is sending; the workers registered in the database deliver it."""
    from ..workers import list_workers

    live = [w for w in list_workers(app.engine) if not w.lost and w.state == "running"]
    with app.engine.connect() as conn:
        pending = q.pending_count(conn, row.id)
    label = f"{row.publication} 第{row.number}号"
    if live:
        click.echo(f"{label}: {pending} pending, handed to {len(live)} running worker process(es); "
                   "'newsletter status' shows the progress")
    else:
        click.echo(f"{label}: {pending} pending, left for the workers — none is running now: start "
                   "'newsletter worker' or 'newsletter run'", err=True)
    return 0


def _start(app: App, row, plan):
    """An unsent edition starts sending (editions/state.py checks the approval and
    that its content is still what preflight checked)."""
    started = state.start_sending(app.engine, app.config, row.id, app.actor,
                                  checked=plan.content if plan is not None else None)
    click.echo(f"sending {row.publication} 第{row.number}号 ({row.status}): {started.pending} to send, "
               f"{started.skipped} skipped (nothing in their fields)")
    with app.engine.connect() as conn:
        return q.get_edition(conn, row.id)


def _preflight(app: App, pub, force: bool, edition=None):
    """The checks of 'edition check' before anything is created or sent; the plan they
    checked (None: nothing new), whose content and renders the send then uses."""
    from ..preflight import check, format_findings, has_errors

    app.config.secret()  # every mail carries signed links: without a key, refuse before creating anything
    plan, findings = check(app.engine, app.config, pub, edition=edition)
    errors = has_errors(findings)
    for line in format_findings([f for f in findings if f.severity in ("error", "warning")], verbose=False):
        click.echo(line, err=True)
    if errors and not force:
        raise InputError(f"{pub.slug}: the preflight check found errors (see above); fix them, "
                         "or send anyway with --force")
    return plan


def _content_for(app: App, publication: str | None, number: int | None):
    """(content, when, edition row or None): a stored edition, or the next one as it would be."""
    if number is not None:
        row = resolve_edition(app.engine, app.config, number, publication)
        return load_content(row), row.scheduled_for or row.created_at, row
    if not publication:
        if len(app.config.publications) != 1:
            raise click.UsageError("name the publication")
        publication = app.config.publications[0].slug
    pub = app.config.publication(publication)
    now = utcnow()
    with app.engine.connect() as conn:
        content = creation.next_content(conn, app.config, pub, now)
    if not content["articles"]:
        raise InputError(f"{pub.slug}: nothing new to preview (no queued articles past their embargo); use --edition N")
    return content, now, None


def _variant(app: App, pub, fields: str | None, fmt: str) -> VariantKey:
    try:
        wanted = parse_fields(app.config, fields).split(",") if fields else list(pub.fields)
    except ValueError as exc:
        raise InputError(f"--fields: {exc}") from None
    chosen = tuple(f for f in pub.fields if f in wanted)
    if not chosen:
        raise InputError(f"--fields: none of them is in {pub.slug} ({', '.join(pub.fields)})")
    return VariantKey(chosen, fmt, pub.charset)


def _test_send(app: App, publication, number, address, fields, fmt):
    try:
        address = normalize_email(address)
    except ValueError as exc:
        raise InputError(f"--test-to: {exc}") from None
    content, when, row = _content_for(app, publication, number)
    slug = content["publication"]["slug"]
    pub = app.config.publication(slug)
    key = _variant(app, pub, fields, fmt)
    result = preview.send_test(app.config, content, when, key, address, edition=row)
    click.echo(f"test message to {address}: {result.status} {result.reply}".rstrip())
    if result.status != "accepted":
        raise SystemExit(1)


def _row(app: App, number: int, publication: str | None):
    return resolve_edition(app.engine, app.config, number, publication)


publication_option = click.option("--publication", help="When several publications have an edition N.")


@edition.command("pause")
@click.argument("number", type=int)
@publication_option
@pass_app
def edition_pause(app: App, number, publication):
    """Pause edition NUMBER: a running send stops within seconds, nothing is lost."""
    row = state.pause(app.engine, app.config, _row(app, number, publication).id, app.actor)
    click.echo(f"{row.publication} 第{row.number}号: paused")


@edition.command("resume")
@click.argument("number", type=int)
@publication_option
@pass_app
def edition_resume(app: App, number, publication):
    """Resume a paused edition (then 'edition send --edition N', or the daemon, sends it)."""
    row = state.resume(app.engine, app.config, _row(app, number, publication).id, app.actor)
    click.echo(f"{row.publication} 第{row.number}号: resumed")


@edition.command("cancel")
@click.argument("number", type=int)
@publication_option
@pass_app
def edition_cancel(app: App, number, publication):
    """Cancel edition NUMBER: its pending deliveries are never sent (an unsent edition
    is discarded and its articles go back to the queue)."""
    before = _row(app, number, publication)
    row, cancelled = state.cancel(app.engine, app.config, before.id, app.actor)
    if before.status in state.UNSENT:
        click.echo(f"{row.publication} 第{row.number}号: cancelled (was {before.status}; its articles are free again)")
    else:
        click.echo(f"{row.publication} 第{row.number}号: cancelled ({cancelled} pending deliveries dropped)")


@edition.command("add-article")
@click.argument("number", type=int)
@click.argument("article_id", type=int)
@publication_option
@pass_app
def edition_add_article(app: App, number, article_id, publication):
    """Add article ARTICLE_ID to draft NUMBER (at the end; see 'edition order')."""
    row = _row(app, number, publication)
    digest = state.add_article(app.engine, app.config, row.id, article_id, app.actor)
    click.echo(f"{row.publication} 第{row.number}号: added article {article_id} (content {digest[:HASH_SHOWN]})")


@edition.command("remove-article")
@click.argument("number", type=int)
@click.argument("article_id", type=int)
@publication_option
@pass_app
def edition_remove_article(app: App, number, article_id, publication):
    """Remove article ARTICLE_ID from draft NUMBER (it goes back to the queue)."""
    row = _row(app, number, publication)
    digest = state.remove_article(app.engine, app.config, row.id, article_id, app.actor)
    click.echo(f"{row.publication} 第{row.number}号: removed article {article_id} (content {digest[:HASH_SHOWN]})")


@edition.command("order")
@click.argument("number", type=int)
@click.argument("ids")
@publication_option
@pass_app
def edition_order(app: App, number, ids, publication):
    """Put the articles of draft NUMBER in the order IDS (every id once: 12,7,9)."""
    try:
        order = [int(x) for x in ids.replace("、", ",").split(",") if x.strip()]
    except ValueError:
        raise InputError(f"order: '{ids}' is not a comma-separated list of article ids") from None
    row = _row(app, number, publication)
    digest = state.reorder(app.engine, app.config, row.id, order, app.actor)
    click.echo(f"{row.publication} 第{row.number}号: order {','.join(map(str, order))} "
               f"(content {digest[:HASH_SHOWN]})")


def _read_markdown(path: Path | None, option: str) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError(f"{option} {path}: no such file") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{option} {path}: not UTF-8 (byte {exc.start})") from None
    except OSError as exc:
        raise InputError(f"{option} {path}: {exc.strerror}") from None


@edition.command("set")
@click.argument("number", type=int)
@click.option("--subject", help="The subject ('' for the default: 【title】第N号 top headline).")
@click.option("--lead-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Markdown file with the lead (巻頭言); an empty file removes it.")
@click.option("--afterword-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Markdown file with the afterword (編集後記); an empty file removes it.")
@click.option("--notice-file", type=click.Path(dir_okay=False, path_type=Path),
              help="The お知らせ of this edition: a TOML file (title, text, link, link_label, image, image_alt); "
                   "an empty file removes it.")
@publication_option
@pass_app
def edition_set(app: App, number, subject, lead_file, afterword_file, notice_file, publication):
    """Set the subject, lead, afterword and お知らせ of draft NUMBER."""
    if subject is None and lead_file is None and afterword_file is None and notice_file is None:
        raise click.UsageError("nothing to set: give --subject, --lead-file, --afterword-file or --notice-file")
    lead = _read_markdown(lead_file, "--lead-file")
    afterword = _read_markdown(afterword_file, "--afterword-file")
    notice = load_notice(notice_file) if notice_file is not None else None
    row = _row(app, number, publication)
    digest = state.set_texts(app.engine, app.config, row.id, app.actor, subject=subject, lead=lead,
                             afterword=afterword, notice=notice)
    click.echo(f"{row.publication} 第{row.number}号: updated (content {digest[:HASH_SHOWN]})")


@edition.command("approve")
@click.argument("number", type=int)
@click.option("--hash", "digest", required=True, help="The content hash 'edition preview --edition N' printed.")
@click.option("--by", "by", metavar="NAME", help="The approver (default: --as / $NEWSLETTER_USER).")
@publication_option
@pass_app
def edition_approve(app: App, number, digest, by, publication):
    """Approve draft NUMBER exactly as previewed (its content hash must still match).

    Its preflight check runs first (as in the console): an error refuses the approval."""
    from ..preflight import CheckFailed, approve, format_findings
    from ..users import actor

    who = actor(app.engine, by, "cli") if by else app.actor
    try:
        row = approve(app.engine, app.config, _row(app, number, publication), who, digest)
    except CheckFailed as exc:
        for line in format_findings([f for f in exc.findings if f.severity in ("error", "warning")], verbose=False):
            click.echo(line, err=True)
        raise
    click.echo(f"{row.publication} 第{row.number}号: approved by {who} (content {row.approved_hash[:HASH_SHOWN]})")


@edition.command("request-approval")
@click.argument("number", type=int)
@publication_option
@pass_app
def edition_request_approval(app: App, number, publication):
    """Ask for approval of draft NUMBER (承認依頼): approvers see it waiting.

    Any later change of the draft withdraws the request; ask again then."""
    row = state.request_approval(app.engine, app.config, _row(app, number, publication).id, app.actor)
    click.echo(f"{row.publication} 第{row.number}号: waiting for approval, asked by {app.actor} "
               f"(content {state.hash_of(row)[:HASH_SHOWN]})")


@edition.command("withdraw-request")
@click.argument("number", type=int)
@publication_option
@pass_app
def edition_withdraw_request(app: App, number, publication):
    """Take back the request for approval of draft NUMBER."""
    row = state.withdraw_request(app.engine, app.config, _row(app, number, publication).id, app.actor)
    click.echo(f"{row.publication} 第{row.number}号: no longer waiting for approval")


@edition.command("unapprove")
@click.argument("number", type=int)
@publication_option
@pass_app
def edition_unapprove(app: App, number, publication):
    """Withdraw the approval of edition NUMBER (and its schedule): it is a draft again."""
    row = state.unapprove(app.engine, app.config, _row(app, number, publication).id, app.actor)
    click.echo(f"{row.publication} 第{row.number}号: back to draft")


@edition.command("schedule")
@click.argument("number", type=int)
@click.option("--at", "at", required=True, help='When, in the publication\'s time zone: "2026-12-03 10:00".')
@publication_option
@pass_app
def edition_schedule(app: App, number, at, publication):
    """Send approved edition NUMBER at a given time (予約配信; 'newsletter run' sends it)."""
    from ..articles import parse_time

    row = _row(app, number, publication)
    pub = app.config.publication(row.publication)
    try:
        when = parse_time(at, pub.timezone)
    except ValueError:
        raise InputError(f"--at '{at}': expected a date and time such as \"2026-12-03 10:00\"") from None
    row = state.schedule(app.engine, app.config, row.id, when, app.actor)
    click.echo(f"{row.publication} 第{row.number}号: scheduled for {app.local_time(row.scheduled_for, pub.timezone)}")


@edition.command("unschedule")
@click.argument("number", type=int)
@publication_option
@pass_app
def edition_unschedule(app: App, number, publication):
    """Take edition NUMBER off its schedule (it stays approved)."""
    row = state.unschedule(app.engine, app.config, _row(app, number, publication).id, app.actor)
    click.echo(f"{row.publication} 第{row.number}号: unscheduled (approved)")


@edition.command("history")
@click.argument("number", type=int)
@publication_option
@pass_app
def edition_history(app: App, number, publication):
    """Every state change of edition NUMBER: when, who, from where, what."""
    row = _row(app, number, publication)
    tz = app.config.publication(row.publication).timezone
    for r in state.history(app.engine, row.id):
        detail = f"  {r.detail}" if r.detail else ""
        click.echo(f"{app.local_time(r.at, tz)}\t{r.actor or '-'}\t{r.interface}\t{r.action}{detail}")


@edition.command("preview")
@click.argument("publication", required=False)
@click.option("--edition", "number", type=int, help="A stored edition instead of the next one.")
@click.option("--fields", help="The reader's fields (default: all of the publication's).")
@click.option("--format", "fmt", type=click.Choice(["html", "text"]), default="html", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write to FILE instead of stdout.")
@click.option("--charset", type=click.Choice(["utf-8", "iso-2022-jp"]),
              help="The reader's charset (default: the publication's).")
@pass_app
def edition_preview(app: App, publication, number, fields, fmt, out, charset):
    """Render the next edition (or --edition N) for one reader; sends and changes nothing.

    For an ISO-2022-JP reader it reports on stderr what had to be replaced
    (① → (1) ...) and what cannot be sent in that charset at all."""
    content, when, row = _content_for(app, publication, number)
    pub = app.config.publication(content["publication"]["slug"])
    key = _variant(app, pub, fields, fmt)
    if row is not None and row.status in state.UNSENT:
        digest = state.hash_of(row)[:HASH_SHOWN]
        click.echo(f"{row.publication} 第{row.number}号 ({row.status}), content {digest}"
                   + (f" — approve what you see: newsletter edition approve {row.number} --hash {digest}"
                      if row.status == "draft" else ""), err=True)
    if charset:
        key = VariantKey(key.fields, key.format, charset)
    shown = preview.sample(app.config, content, when, key)
    rendered = shown.rendered
    if key.charset == "iso-2022-jp":
        from ..japanese import describe, unmappable

        if rendered.replacements:
            click.echo(f"replaced: {describe(rendered.replacements)}", err=True)
        rest = unmappable(rendered.subject + rendered.text + (rendered.html or ""))
        if rest:
            click.echo(f"not in ISO-2022-JP (these mails go out as UTF-8): "
                       f"{' '.join(f'{c} (U+{ord(c):04X})' for c in rest)}", err=True)
    body = shown.html if fmt == "html" else shown.text
    if out:
        out.write_text(body, encoding="utf-8")
        click.echo(f"Subject: {rendered.subject}")
        click.echo(f"wrote {out} ({len(rendered.article_ids)} articles)")
    else:
        if fmt == "text":
            click.echo(f"Subject: {rendered.subject}\n")
        click.echo(body)


@edition.command("list")
@click.argument("publication", required=False)
@pass_app
def edition_list(app: App, publication):
    """Editions, newest first, with delivery counts."""
    if publication:
        app.config.publication(publication)
    with app.engine.connect() as conn:
        for row in q.list_editions(conn, publication):
            counts = q.counts(conn, row.id)
            click.echo(f"{row.publication}\t第{row.number}号\t{app.local_time(row.created_at)}\t{row.status}\t{counts_text(counts)}")


@edition.command("status")
@click.argument("number", type=int)
@click.option("--publication", help="When several publications have an edition N.")
@pass_app
def edition_status(app: App, number, publication):
    """Delivery counts of edition NUMBER (pending/sent/failed/skipped)."""
    row = resolve_edition(app.engine, app.config, number, publication)
    content = load_content(row)
    with app.engine.connect() as conn:
        counts = q.counts(conn, row.id)
        retry = q.next_retry(conn, row.id)
    click.echo(f"edition:     {row.publication} 第{row.number}号 ({content['publication']['title']})")
    click.echo(f"status:      {row.status}")
    if row.status in state.UNSENT or row.approved_by:
        click.echo(f"subject:     {content.get('subject') or '-'}")
        click.echo(f"edited by:   {row.edited_by or '-'} ({app.local_time(row.edited_at)})")
        click.echo(f"approved by: {row.approved_by or '-'} ({app.local_time(row.approved_at)})")
        if row.approval_requested_at is not None:
            click.echo(f"requested:   approval asked by {row.approval_requested_by or '-'} "
                       f"({app.local_time(row.approval_requested_at)})")
    if row.status in state.UNSENT:
        click.echo(f"content:     {state.hash_of(row)[:HASH_SHOWN]}")
    if row.status == "scheduled":
        click.echo(f"goes out:    {app.local_time(row.scheduled_for)}")
    click.echo(f"created:     {app.local_time(row.created_at)}")
    click.echo(f"finished:    {app.local_time(row.finished_at)}")
    click.echo(f"articles:    {len(content['articles'])}")
    for status, n in counts.items():
        click.echo(f"{status + ':':13}{n}")
    if counts["pending"] and retry:
        click.echo(f"next retry:  {app.local_time(retry)}")
    if row.status == "sending" and counts["pending"]:
        rate, eta = edition_eta(app.engine, row.id)
        click.echo(f"rate:        {rate:.1f}/s over the last minute")
        click.echo(f"eta:         {app.local_time(eta) if eta else '-'}")
    if row.note:
        click.echo(f"note:        {row.note}")


@edition.command("failures")
@click.argument("number", type=int)
@click.option("--publication", help="When several publications have an edition N.")
@click.option("--json", "as_json", is_flag=True, help="One JSON array instead of lines.")
@pass_app
def edition_failures(app: App, number, publication, as_json):
    """The failed deliveries of edition NUMBER: address, reason, attempts, last try.

    The last column says whether 'edition retry NUMBER --failed' would send it again."""
    from ..delivery import not_retryable

    row = resolve_edition(app.engine, app.config, number, publication)
    tz = app.config.publication(row.publication).timezone
    with app.engine.connect() as conn:
        failed = q.failed_deliveries(conn, row.id)
    if as_json:
        import json
        from zoneinfo import ZoneInfo

        click.echo(json.dumps([{
            "address": f.email, "reason": f.last_reply or "", "attempts": f.attempts,
            "last_try": f.updated_at.astimezone(ZoneInfo(tz)).isoformat(timespec="seconds"),
            "retryable": not_retryable(f) is None, "not_retryable_because": not_retryable(f),
        } for f in failed], ensure_ascii=False, indent=1))
        return
    if not failed:
        click.echo(f"{row.publication} 第{row.number}号: no failed deliveries")
        return
    for f in failed:
        why = not_retryable(f)
        reason = " ".join((f.last_reply or "-").split())
        click.echo(f"{f.email}\t{reason}\tattempts {f.attempts}\t{app.local_time(f.updated_at, tz)}\t"
                   f"{'retryable' if why is None else f'not retryable: {why}'}")
    retryable = sum(1 for f in failed if not_retryable(f) is None)
    click.echo(f"{row.publication} 第{row.number}号: {len(failed)} failed, {retryable} retryable "
               f"('newsletter edition retry {row.number} --failed')", err=True)


@edition.command("retry")
@click.argument("number", type=int)
@click.option("--failed", "failed", is_flag=True, help="Put the retryable failed deliveries back to pending.")
@click.option("--publication", help="When several publications have an edition N.")
@click.option("--dry-run", is_flag=True, help="Only say how many would go back; change nothing.")
@pass_app
def edition_retry(app: App, number, failed, publication, dry_run):
    """Send the retryable failures of edition NUMBER again (with --failed).

    Not retried: bad addresses (5.1.x), subscribers no longer active, and
    messages whose outcome was unknown (they may have arrived). The rows go back
    to pending; 'edition send --edition NUMBER' or 'newsletter run' sends them."""
    from ..delivery import retry_failed

    if not failed:
        raise click.UsageError("say what to retry: --failed")
    row = resolve_edition(app.engine, app.config, number, publication)
    done = retry_failed(app.engine, row.id, dry_run=dry_run, actor=app.actor)
    label = f"{row.publication} 第{row.number}号"
    kept = "; ".join(f"{n} {why}" for why, n in sorted(done.kept.items()))
    kept = f" (kept failed: {kept})" if kept else ""
    if dry_run:
        click.echo(f"{label}: {done.requeued} failed deliveries would go back to pending{kept}; nothing changed")
        return
    click.echo(f"{label}: {done.requeued} failed deliveries back to pending{kept}")
    if done.requeued:
        if row.status == "paused":
            click.echo(f"  the edition is paused: 'newsletter edition resume {row.number}' first")
        click.echo(f"  send them: newsletter edition send --edition {row.number} (or leave it to 'newsletter run')")
