"""The ``newsletter`` command: one sub-group per noun (a module each), one command per verb.

Exit codes: 0 done, 1 input or runtime error (one line on stderr naming the
file/line/key/address), 2 usage error (click's own).
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path

import click

from .. import __version__
from ..config import Config, load_config
from ..errors import ConfigError, InputError, NewsletterError

log = logging.getLogger("newsletter")


class App:
    """What every command needs, loaded on first use so that ``--help`` never needs a config."""

    def __init__(self, config_path: str | None, user: str | None = None):
        self.config_path = config_path
        self.user = user
        self._config: Config | None = None
        self._engine = None

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(self.config_path)
        return self._config

    @property
    def engine(self):
        if self._engine is None:
            from ..store import open_engine

            self._engine = open_engine(self.config.storage_url)
        return self._engine

    @property
    def actor(self):
        """Who acts (``--as`` / ``$NEWSLETTER_USER``); the audit log records the name."""
        from ..users import actor

        return actor(self.engine, self.user, "cli")

    def local_time(self, dt: datetime | None, tz: str | None = None) -> str:
        if dt is None:
            return "-"
        from zoneinfo import ZoneInfo

        return dt.astimezone(ZoneInfo(tz or self.config.site.timezone)).strftime("%Y-%m-%d %H:%M %Z")


def field_option(config: Config, value: str) -> str:
    """One ``--field`` value (slug or name) → its slug, or the one-line error
    (the rule is :meth:`Config.read_fields`)."""
    try:
        return config.read_fields([value])
    except ValueError as exc:
        raise InputError(f"--field: {exc}") from None


class NewsletterGroup(click.Group):
    """Turns our errors into one line on stderr and exit code 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (NewsletterError, ConfigError) as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(1)


pass_app = click.make_pass_decorator(App)


@click.group(cls=NewsletterGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config", "config_path", metavar="PATH", envvar="NEWSLETTER_CONFIG",
    help="config.toml to use (default: $NEWSLETTER_CONFIG, else ./config.toml).",
)
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", envvar="NEWSLETTER_LOG_FORMAT",
              show_default=True, help="Log lines on stderr as text or as JSON lines.")
@click.option("--as", "user", metavar="NAME", envvar="NEWSLETTER_USER",
              help="Act as this user (default: $NEWSLETTER_USER); recorded in the audit log.")
@click.version_option(__version__, prog_name="newsletter")
@click.pass_context
def main(ctx: click.Context, config_path: str | None, verbose: int, log_format: str, user: str | None) -> None:
    """newsletter — a mail-magazine publishing pipeline.

    Editors queue articles, operators manage subscribers, and editions (第N号)
    go out as a digest of each subscriber's fields.
    """
    # Our own events at INFO; libraries (alembic, premailer's cssutils...) only when asked.
    from ..logs import configure

    configure(log_format, debug=verbose >= 2)
    log.setLevel(logging.DEBUG if verbose else logging.INFO)
    ctx.obj = App(config_path, user)


@main.command()
@click.option("--templates", "templates_to", metavar="DIR", type=click.Path(file_okay=False, path_type=Path),
              help="Instead: copy the default templates into DIR for editing (then set [paths] templates).")
@click.option("--force", is_flag=True, help="With --templates: overwrite files that are already there.")
@pass_app
def init(app: App, templates_to: Path | None, force: bool) -> None:
    """Create the database, or upgrade it to this version's schema; make var/secret.key
    when $NEWSLETTER_SECRET is unset and there is none.

    On PostgreSQL the database itself is created when the server allows it."""
    if templates_to is not None:
        return _copy_templates(templates_to, force)
    if force:
        raise click.UsageError("--force goes with --templates DIR")
    from ..store import ensure_database, make_engine, upgrade

    created = ensure_database(app.config.storage_url)
    if created:
        click.echo(f"created the PostgreSQL database '{created}'")
    engine = make_engine(app.config.storage_url)
    before, after = upgrade(engine)
    if before is None:
        click.echo(f"initialised {app.config.storage_url} (schema {after})")
    elif before == after:
        click.echo(f"database is up to date (schema {after})")
    else:
        click.echo(f"upgraded {app.config.storage_url} from schema {before} to {after}")
    made = app.config.create_secret()
    if made is not None:
        click.echo(f"made a link-signing key in {made} (${app.config.site.secret_env} is not set)")


def _copy_templates(dest: Path, force: bool) -> None:
    """The packaged default templates into ``dest``; nothing is written when a file
    is already there, unless ``force``."""
    import shutil

    from ..config import PACKAGED_TEMPLATES

    source = PACKAGED_TEMPLATES.resolve()
    files = sorted(p.relative_to(source) for p in source.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    existing = [rel for rel in files if (dest / rel).exists()]
    if existing and not force:
        raise InputError(f"{dest / existing[0]}: already exists ({len(existing)} of the {len(files)} template "
                         "files are there); nothing copied — use --force to overwrite them")
    for rel in files:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / rel, dest / rel)
    click.echo(f"copied {len(files)} template files to {dest}")
    click.echo("each file there overrides the packaged default of the same name; set [paths] templates = "
               f'"{dest}" in config.toml unless it is the templates/ folder beside it')


# Each noun's commands live in their own module and register on ``main``.
from . import articles, bounces, check, deliverability, demo, editions, run, schedule, subscribers, users, web  # noqa: E402,F401,I001
from . import stats  # noqa: E402,F401,I001  (edition report, stats prune)
