"""Load and validate ``config.toml`` into frozen objects.

Every error names the file and the key (``config.toml: publications[1].schedule:
invalid cron expression '0 25 * * *' ...``).  Relative paths resolve against the
config file's folder.  Secrets never live here: keys ending in ``_env`` name the
environment variable that holds them.

The rules this module keeps:

- one reader, :class:`OptionReader`, reads every table — ours here and each
  provider's options in ``newsletter.providers`` — with one ``fail(key, message)``,
  one ``duration()`` and one ``rate()``; whatever TOML holds, a mistake is a
  ConfigError naming the key, never another exception;
- :func:`parse_config` is one small function per table (``_parse_site``,
  ``_parse_sender`` …); each refuses keys it does not know;
- reading config changes nothing on disk: :meth:`Config.secret` reads the
  link-signing key, :meth:`Config.create_secret` (``newsletter init``,
  ``newsletter demo``) is the one place that makes ``var/secret.key``.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, NoReturn
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from email_validator import EmailNotValidError, validate_email

from .cron import cron_trigger
from .errors import ConfigError, InputError
from .sanitize import text_problem, url_problem

SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
CHARSETS = ("utf-8", "iso-2022-jp")
FORMATS = ("html", "text")
LANGUAGES = ("ja", "en")
ENV_CONFIG = "NEWSLETTER_CONFIG"
ENV_STORAGE_URL = "NEWSLETTER_STORAGE_URL"


@dataclass(frozen=True)
class Site:
    name: str
    base_url: str
    secret_env: str = "NEWSLETTER_SECRET"
    language: str = "ja"
    timezone: str = "Asia/Tokyo"
    # Comma-separated old signing keys, still accepted when verifying links (key rotation).
    old_secrets_env: str = "NEWSLETTER_OLD_SECRETS"

    @property
    def domain(self) -> str:
        return re.sub(r"^[a-z]+://", "", self.base_url).split("/")[0].split(":")[0]


@dataclass(frozen=True)
class Sender:
    name: str
    address: str
    reply_to: str | None
    postal_address: str
    contact: str
    bounce_address: str | None = None
    unsubscribe_mailto: str | None = None


@dataclass(frozen=True)
class Field:
    slug: str
    name: str


@dataclass(frozen=True)
class Publication:
    slug: str
    title: str
    fields: tuple[str, ...]
    schedule: str
    timezone: str = "Asia/Tokyo"
    max_articles: int = 20
    charset: str = "utf-8"
    full_text: bool = False
    language: str = "ja"
    description: str = ""
    text_width: int = 70  # display columns of the text part (a full-width character takes 2)
    on_holiday: str = "send"  # "send" | "skip" | "next_business_day" (see calendar_jp)
    misfire_grace: float = 6 * 3600.0  # seconds: a slot missed by less is still sent
    # "none": editions go out as created (today's behaviour); "required": nothing reaches a
    # subscriber without an approval by someone other than the last editor (editions/state.py).
    approval: str = "none"
    # The お知らせ block of every edition ([publications.notice]: title, text, link,
    # link_label, image, image_alt), as (key, value) pairs; () for none.
    notice: tuple[tuple[str, str], ...] = ()
    # Reading statistics (newsletter/stats.py): "off" | "aggregate" | "per-subscriber".
    tracking: str = "off"
    tracking_retention: float = 400 * 86400.0  # seconds: older events are folded into counts

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


@dataclass(frozen=True)
class Rate:
    """So many messages per so many seconds ("50/s", "300/m", "10000/h")."""

    count: float
    per_seconds: float

    @property
    def per_second(self) -> float:
        return self.count / self.per_seconds


@dataclass(frozen=True)
class DomainLimit:
    domains: tuple[str, ...]
    rate: Rate


@dataclass(frozen=True)
class DeliverySettings:
    """How the delivery engine uses the provider: keys of ``[provider]`` that are
    the engine's, not the provider's (they mean the same for every kind)."""

    connections: int = 1
    rate: Rate | None = None
    hourly_quota: int | None = None
    daily_quota: int | None = None
    domain_limits: tuple[DomainLimit, ...] = ()
    retry_for_seconds: float = 3 * 86400
    hard_bounce_limit: int = 1
    max_errors: int = 50
    batch_size: int = 500
    lease_seconds: float = 120.0
    # A provider-wide throttle (429, SMTP 421) longer than this stops the run instead of pausing it.
    max_throttle_wait_seconds: float = 60.0


ENGINE_KEYS = (
    "connections", "rate", "hourly_quota", "daily_quota", "domain_limits", "retry_for",
    "hard_bounce_limit", "max_errors", "batch_size", "lease_seconds", "max_throttle_wait",
)
_RATE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|sec|second|m|min|minute|h|hour)\s*$")
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)\s*$")
_UNIT_SECONDS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600, "d": 86400}
MAX_DURATION = 3650 * 86400.0  # ten years: longer is a typo, and datetime arithmetic must not overflow
MAX_RATE = 1_000_000.0  # messages per second


def parse_rate(text: str) -> Rate:
    m = _RATE_RE.match(text)
    count = float(m.group(1)) if m and len(m.group(1)) <= 15 else 0.0
    if not m or count <= 0 or count / _UNIT_SECONDS[m.group(2)] > MAX_RATE:
        raise ValueError(f"invalid rate {_shown(text)} (expected e.g. \"50/s\", \"300/m\" or \"10000/h\", "
                         f"at most {MAX_RATE:,.0f}/s)")
    return Rate(count, _UNIT_SECONDS[m.group(2)])


def _type_name(value: object) -> str:
    return {bool: "true/false", str: "a string", int: "an integer", float: "a number",
            list: "a list", dict: "a table"}.get(type(value), type(value).__name__)


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:39] + "…"


class OptionReader:
    """Typed access to one TOML table: a table of ``config.toml``, or the options of
    ``[provider]`` that a provider reads (:mod:`newsletter.providers` re-exports it).

    The rules it keeps, for every table alike:

    - every mistake is one :class:`ConfigError` raised by :meth:`fail`, naming the
      key (``config.toml: publications[0].schedule: …``; ``provider.port: …`` when
      the reader has no file);
    - every getter records its key, and :meth:`finish` refuses any key nobody asked
      for (a misspelt ``prot = 587`` is an error, not the default port);
    - a value of the wrong TOML type is refused, never coerced or compared (``true``
      is not the integer 1, ``[{a=1}]`` is not a list of names);
    - numbers are finite (no ``nan``/``inf``), durations and rates are read by
      :meth:`duration` and :meth:`rate` and bounded (:data:`MAX_DURATION`,
      :data:`MAX_RATE`);
    - texts have no control characters (``sanitize.text_problem``), no line breaks
      unless the key allows them, and are never empty.
    """

    def __init__(self, options: Any, owner: str | None = None, prefix: str = "provider", *,
                 file: Path | None = None):
        self.file = file
        self.prefix = prefix
        self.owner = owner  # the provider's name, for "unknown option for the 'smtp' provider"
        self.known: set[str] = set()
        if not isinstance(options, Mapping):
            self.data: dict[str, Any] = {}
            self.fail(None, f"must be a table, not {_type_name(options)}")
        self.data = dict(options)

    def fail(self, key: str | None, message: str) -> NoReturn:
        """Raise the ConfigError naming ``key`` (``None``: the table itself)."""
        where = ".".join(p for p in (self.prefix, key) if p)
        raise ConfigError(f"{self.file.name}: {where}: {message}" if self.file else f"{where}: {message}")

    def present(self, key: str) -> bool:
        return key in self.data

    def get(self, key: str, typ: type | tuple[type, ...], default: Any = None, *, required: bool = False) -> Any:
        """The value of ``key`` if it has type ``typ``; ``default`` when absent."""
        self.known.add(key)
        if key not in self.data:
            if required:
                self.fail(key, "missing required key")
            return default
        value = self.data[key]
        types = typ if isinstance(typ, tuple) else (typ,)
        if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
            names = " or ".join(_type_name(t()) for t in types)
            self.fail(key, f"must be {names}, not {_type_name(value)} ({_shown(value)})")
        return value

    def text(self, key: str, default: str | None = None, *, required: bool = False,
             choices: Collection[str] | None = None, lines: bool = False) -> str | None:
        value = self.get(key, str, default, required=required)
        if key not in self.data:
            return value
        if not value.strip():
            self.fail(key, "must not be empty")
        if not lines and ("\r" in value or "\n" in value):
            self.fail(key, "line breaks are not allowed here")
        problem = text_problem(value.replace("\r", "\n"))
        if problem:
            self.fail(key, problem)
        if choices is not None and value not in choices:
            self.fail(key, f"must be one of {', '.join(repr(c) for c in choices)}, not {_shown(value)}")
        return value

    def integer(self, key: str, default: int | None, *,
                minimum: int | None = None, maximum: int | None = None) -> int | None:
        value = self.get(key, int, default)
        if key in self.data:
            self._check_range(key, value, minimum, maximum)
        return value

    def number(self, key: str, default: float, *, minimum: float | None = None,
               maximum: float | None = None) -> float:
        value = self.get(key, (int, float), default)
        if key not in self.data:
            return value
        if not math.isfinite(value):
            self.fail(key, f"must be a finite number, not {value}")
        self._check_range(key, value, minimum, maximum)
        return float(value)

    def boolean(self, key: str, default: bool) -> bool:
        return self.get(key, bool, default)

    def duration(self, key: str, default: str | float, *, positive: bool = False) -> float:
        """Seconds, from "90s", "30m", "6h", "2d" or a number of seconds; at most
        :data:`MAX_DURATION`; ``positive``: more than 0."""
        value = self.get(key, (str, int, float), default)
        if isinstance(value, str):
            m = _DURATION_RE.match(value)
            if not m or len(m.group(1)) > 15:
                self.fail(key, f"invalid duration {_shown(value)} (expected e.g. \"90s\", \"30m\", \"6h\", "
                               "\"2d\" or seconds)")
            seconds = float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        else:
            if not math.isfinite(value):
                self.fail(key, f"must be a finite duration, not {value}")
            seconds = float(value)
        if seconds < 0 or (positive and seconds == 0):
            self.fail(key, "must be more than 0" if positive else "must not be negative")
        if seconds > MAX_DURATION:
            self.fail(key, f"must be at most {MAX_DURATION / 86400:.0f} days")
        return seconds

    def rate(self, key: str, default: Rate | None = None) -> Rate | None:
        """So many per second/minute/hour ("50/s", "300/m", "10000/h")."""
        value = self.get(key, str, None)
        if value is None:
            return default
        try:
            return parse_rate(value)
        except ValueError as exc:
            self.fail(key, str(exc))

    def str_list(self, key: str, default: Sequence[str] = ()) -> tuple[str, ...]:
        value = self.get(key, list, list(default))
        if not all(isinstance(v, str) and v.strip() and not text_problem(v, lines=False) for v in value):
            self.fail(key, "must be a list of non-empty strings")
        return tuple(v.strip() for v in value)

    def address(self, key: str, default: str | None = None, *, required: bool = False) -> str | None:
        value = self.text(key, default, required=required)
        if value is None:
            return None
        try:
            return validate_email(value, check_deliverability=False).normalized
        except EmailNotValidError as exc:
            self.fail(key, f"invalid email address '{value}': {exc}")

    def forbid(self, key: str, message: str) -> None:
        """Refuse a key that must never be set here (e.g. a literal password)."""
        if key in self.data:
            self.fail(key, message)
        self.known.add(key)

    def finish(self, extra_ok: Collection[str] = ()) -> None:
        """Fail on the first key no getter asked about."""
        for key in self.data:
            if key not in self.known and key not in extra_ok:
                if self.owner:
                    known = ", ".join(sorted(self.known))
                    self.fail(key, f"unknown option for the '{self.owner}' provider (known: {known})")
                self.fail(key, "unknown key")

    def _check_range(self, key: str, value: float, minimum: float | None, maximum: float | None) -> None:
        if minimum is not None and value < minimum:
            self.fail(key, f"must be at least {minimum}, not {value}")
        if maximum is not None and value > maximum:
            self.fail(key, f"must be at most {maximum}, not {value}")


def _table(file: Path, prefix: str, raw: Any) -> OptionReader:
    return OptionReader(raw, prefix=prefix, file=file)


# --------------------------------------------------------------------------- one function per table


def _parse_delivery(r: OptionReader) -> DeliverySettings:
    limits = []
    for i, item in enumerate(r.get("domain_limits", list, [])):
        sub = _table(r.file, f"{r.prefix}.domain_limits[{i}]", item)
        domains = sub.get("domains", list, required=True)
        if not domains or not all(isinstance(d, str) and d.strip() for d in domains):
            sub.fail("domains", "must be a list of domain names")
        limit_rate = sub.rate("rate")
        if limit_rate is None:
            sub.fail("rate", "missing required key")
        sub.finish()
        limits.append(DomainLimit(tuple(d.strip().lower() for d in domains), limit_rate))
    return DeliverySettings(
        connections=r.integer("connections", 1, minimum=1, maximum=100),
        rate=r.rate("rate"),
        hourly_quota=r.integer("hourly_quota", None, minimum=1, maximum=10**12),
        daily_quota=r.integer("daily_quota", None, minimum=1, maximum=10**12),
        domain_limits=tuple(limits),
        retry_for_seconds=r.duration("retry_for", "3d"),
        hard_bounce_limit=r.integer("hard_bounce_limit", 1, minimum=1, maximum=1000),
        max_errors=r.integer("max_errors", 50, minimum=1, maximum=10**9),
        batch_size=r.integer("batch_size", 500, minimum=1, maximum=100_000),
        lease_seconds=r.duration("lease_seconds", 120, positive=True),
        max_throttle_wait_seconds=r.duration("max_throttle_wait", "60s", positive=True),
    )


ON_HOLIDAY = ("send", "skip", "next_business_day")
APPROVAL = ("none", "required")
TRACKING_MODES = ("off", "aggregate", "per-subscriber")


@dataclass(frozen=True)
class CalendarSettings:
    """``[calendar]``: the days no edition goes out on besides Japan's public holidays.

    ``closure`` is the year-end closure as ((month, day), (month, day)), inclusive,
    wrapping over the new year (default 12/29–1/3, the 年末年始 of public offices);
    None when ``closure = []``.  ``closed_dates`` are extra single days (お盆, an
    office's own holidays)."""

    closure: tuple[tuple[int, int], tuple[int, int]] | None = ((12, 29), (1, 3))
    closed_dates: tuple[date, ...] = ()


@dataclass(frozen=True)
class WindowLimit:
    """At most ``count`` events per ``seconds`` ("10/h", "3/d", "5/10m")."""

    count: int
    seconds: float


@dataclass(frozen=True)
class WebhookSettings:
    """``[web.webhooks]``: how each provider's bounce/complaint webhook is authenticated.
    An endpoint whose credentials are not configured answers 404."""

    max_age_seconds: float = 86400.0
    sendgrid_public_key: str | None = None  # base64 DER or PEM; public, so it may live in the file
    sendgrid_public_key_env: str | None = None
    mailgun_signing_key_env: str | None = None
    postmark_username: str | None = None
    postmark_password_env: str | None = None
    ses_certificates: Path | None = None  # folder of SNS signing certificates, named as in SigningCertURL
    ses_certificate_hosts: tuple[str, ...] = ("sns.*.amazonaws.com", "sns.*.amazonaws.com.cn")
    ses_fetch_certificates: bool = False
    ses_topic_arns: tuple[str, ...] = ()


@dataclass(frozen=True)
class WebSettings:
    """``[web]``: the subscriber web service (``newsletter serve``)."""

    consent_version: str = "1"
    confirm_expiry_seconds: float = 72 * 3600.0
    signup_limit_ip: WindowLimit = WindowLimit(10, 3600.0)
    signup_limit_address: WindowLimit = WindowLimit(3, 86400.0)
    max_body_bytes: int = 64 * 1024
    trusted_proxies: tuple[str, ...] = ()
    webhooks: WebhookSettings = field(default_factory=WebhookSettings)


@dataclass(frozen=True)
class BounceSettings:
    """``[bounces]``: soft bounces suppress an address after ``soft_limit`` in ``soft_window``."""

    soft_limit: int = 3
    soft_window_seconds: float = 30 * 86400.0


@dataclass(frozen=True)
class DkimSettings:
    """``[dkim]``: sign our own MIME (see :mod:`newsletter.dkim_signer`).  The RSA key is
    always there; an Ed25519 key may be added alongside."""

    domain: str
    selector: str
    private_key_env: str | None = None
    private_key_file: str | None = None
    ed25519_selector: str | None = None
    ed25519_private_key_env: str | None = None
    ed25519_private_key_file: str | None = None


_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_SELECTOR_RE = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")  # DNS labels, dot-separated


def _parse_dkim(r: OptionReader, sender_address: str) -> DkimSettings:
    domain = r.text("domain", sender_address.rpartition("@")[2])
    if not _SELECTOR_RE.match(domain) or "." not in domain:
        r.fail("domain", f"not a domain name: '{domain}'")

    def key_source(prefix: str, required: bool) -> tuple[str | None, str | None, str | None]:
        selector = r.text(f"{prefix}selector")
        env = r.text(f"{prefix}private_key_env")
        path = r.text(f"{prefix}private_key_file")
        if selector is None:
            if required:
                r.fail(f"{prefix}selector", "missing required key")
            if env or path:
                r.fail(f"{prefix}selector", "a key without a selector")
            return None, None, None
        if not _SELECTOR_RE.match(selector):
            r.fail(f"{prefix}selector", f"not a DNS label: '{selector}'")
        if bool(env) == bool(path):
            r.fail(f"{prefix}private_key_env",
                   "give exactly one of private_key_env (PEM in an environment variable) or private_key_file")
        return selector, env, path

    selector, env, path = key_source("", True)
    ed_selector, ed_env, ed_path = key_source("ed25519_", False)
    algorithm = r.text("algorithm", "rsa-sha256")
    if algorithm == "ed25519-sha256":
        r.fail("algorithm", "the main signature stays rsa-sha256 (receivers without Ed25519 verify it); add "
               "Ed25519 alongside with ed25519_selector and ed25519_private_key_env")
    if algorithm != "rsa-sha256":
        r.fail("algorithm", f"expected rsa-sha256, got '{algorithm}'")
    r.finish()
    return DkimSettings(domain.lower(), selector, env, path, ed_selector, ed_env, ed_path)


_WINDOW_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)?\s*(s|m|h|d)\s*$")


def _parse_calendar(r: OptionReader) -> CalendarSettings:
    closure = None
    raw = r.get("closure", list, ["12-29", "01-03"])
    if raw:
        if len(raw) != 2 or not all(isinstance(x, str) for x in raw):
            r.fail("closure", 'expected ["MM-DD", "MM-DD"] (first and last day, inclusive) or [] for none')
        ends = []
        for x in raw:
            m = re.match(r"^(\d{1,2})-(\d{1,2})$", x.strip())
            try:
                if not m:
                    raise ValueError
                date(2000, int(m.group(1)), int(m.group(2)))  # a leap year: 02-29 is a day
            except ValueError:
                r.fail("closure", f"invalid day {_shown(x)} (expected MM-DD)")
            ends.append((int(m.group(1)), int(m.group(2))))
        closure = (ends[0], ends[1])
    dates = []
    for x in r.get("closed_dates", list, []):
        try:
            day = date.fromisoformat(x) if isinstance(x, str) else x
        except ValueError:
            day = None
        if not isinstance(day, date) or isinstance(day, datetime):
            r.fail("closed_dates", f"invalid date {_shown(x)} (expected YYYY-MM-DD)")
        dates.append(day)
    r.finish()
    return CalendarSettings(closure=closure, closed_dates=tuple(sorted(set(dates))))


def _window_limit(r: OptionReader, key: str, default: WindowLimit) -> WindowLimit:
    text = r.text(key)
    if text is None:
        return default
    m = _WINDOW_RE.match(text)
    if not m or not 1 <= int(m.group(1)) <= 10**9 or len(m.group(2) or "") > 15:
        r.fail(key, f"invalid limit {_shown(text)} (expected e.g. \"10/h\", \"3/d\" or \"5/10m\")")
    return WindowLimit(int(m.group(1)), float(m.group(2) or 1) * _UNIT_SECONDS[m.group(3)])


def _parse_webhooks(r: OptionReader, base: Path) -> WebhookSettings:
    certs = r.text("ses_certificates")
    webhooks = WebhookSettings(
        max_age_seconds=r.duration("max_age", "1d", positive=True),
        sendgrid_public_key=r.text("sendgrid_public_key", lines=True),
        sendgrid_public_key_env=r.text("sendgrid_public_key_env"),
        mailgun_signing_key_env=r.text("mailgun_signing_key_env"),
        postmark_username=r.text("postmark_username"),
        postmark_password_env=r.text("postmark_password_env"),
        ses_certificates=(base / certs) if certs else None,
        ses_certificate_hosts=r.str_list("ses_certificate_hosts", WebhookSettings.ses_certificate_hosts),
        ses_fetch_certificates=r.boolean("ses_fetch_certificates", False),
        ses_topic_arns=r.str_list("ses_topic_arns", ()),
    )
    if bool(webhooks.postmark_username) != bool(webhooks.postmark_password_env):
        r.fail("postmark_username", "postmark_username and postmark_password_env go together")
    r.finish()
    return webhooks


def _parse_web(r: OptionReader, base: Path) -> WebSettings:
    version = r.text("consent_version", "1")
    webhooks = _parse_webhooks(_table(r.file, "web.webhooks", r.get("webhooks", dict, {})), base)
    settings = WebSettings(
        consent_version=version.strip(),
        confirm_expiry_seconds=r.duration("confirm_expiry", "72h", positive=True),
        signup_limit_ip=_window_limit(r, "signup_limit_ip", WindowLimit(10, 3600.0)),
        signup_limit_address=_window_limit(r, "signup_limit_address", WindowLimit(3, 86400.0)),
        max_body_bytes=r.integer("max_body_bytes", 64 * 1024, minimum=1024, maximum=2**31 - 1),
        trusted_proxies=r.str_list("trusted_proxies", ()),
        webhooks=webhooks,
    )
    r.finish()
    return settings


def _parse_bounces(r: OptionReader) -> BounceSettings:
    settings = BounceSettings(soft_limit=r.integer("soft_limit", 3, minimum=1, maximum=1000),
                              soft_window_seconds=r.duration("soft_window", "30d", positive=True))
    r.finish()
    return settings


# The default templates ship inside the package: in a source tree newsletter/templates
# is a symlink to the project's templates/ (the one copy editors change), in a wheel
# the same files are package data (pyproject.toml).
PACKAGED_TEMPLATES = Path(__file__).resolve().parent / "templates"


def template_search_path(templates_dir: str | os.PathLike) -> tuple[str, ...]:
    """Where each template is looked for, file by file: ``templates_dir`` (``[paths]
    templates``, by default ``templates/`` beside config.toml) first, then the
    packaged defaults — so a project overrides only the files it has, and an
    installed package with a config anywhere still finds every template."""
    own = str(Path(templates_dir))
    return (own,) if Path(own).resolve() == PACKAGED_TEMPLATES.resolve() else (own, str(PACKAGED_TEMPLATES))


@dataclass(frozen=True)
class ProviderConfig:
    kind: str
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class Config:
    path: Path
    site: Site
    sender: Sender
    storage_url: str
    provider: ProviderConfig
    delivery: DeliverySettings
    fields: tuple[Field, ...]
    publications: tuple[Publication, ...]
    templates_dir: Path
    subscribers_dir: Path
    calendar: CalendarSettings = field(default_factory=CalendarSettings)
    web: WebSettings = field(default_factory=WebSettings)
    bounces: BounceSettings = field(default_factory=BounceSettings)
    dkim: DkimSettings | None = None

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    def field(self, slug: str) -> Field:
        for f in self.fields:
            if f.slug == slug:
                return f
        raise KeyError(slug)

    @property
    def field_slugs(self) -> tuple[str, ...]:
        return tuple(f.slug for f in self.fields)

    def resolve_field(self, token: str) -> str | None:
        """A field slug from a slug or a display name (``education`` or ``教育``)."""
        token = token.strip()
        for f in self.fields:
            if token == f.slug or token == f.name or token.lower() == f.slug:
                return f.slug
        return None

    def read_fields(self, tokens: Iterable[str]) -> str:
        """Field slugs or names → the stored comma-separated slugs in config order; the one
        rule for reading fields from input (ValueError naming the unknown one, or none)."""
        slugs = []
        for token in tokens:
            slug = self.resolve_field(token)
            if slug is None:
                known = ", ".join(f"{f.slug} ({f.name})" for f in self.fields)
                raise ValueError(f"unknown field '{token}' (known: {known})")
            slugs.append(slug)
        if not slugs:
            raise ValueError("no field given")
        return ",".join(self.sort_fields(slugs))

    def publication(self, slug: str) -> Publication:
        for p in self.publications:
            if p.slug == slug:
                return p
        known = ", ".join(p.slug for p in self.publications)
        from .errors import InputError

        raise InputError(f"unknown publication '{slug}' (known: {known})")

    def sort_fields(self, slugs) -> tuple[str, ...]:
        """Field slugs in config order (the order sections appear in a digest)."""
        order = {f.slug: i for i, f in enumerate(self.fields)}
        return tuple(sorted(set(slugs), key=lambda s: order.get(s, len(order))))

    def secret(self) -> bytes:
        """The key that signs readers' links: ``$NEWSLETTER_SECRET`` (``[site] secret_env``),
        else the key ``newsletter init`` made in ``var/secret.key``.  Reading never
        creates anything; with neither, ConfigError names the variable."""
        value = os.environ.get(self.site.secret_env)
        if value:
            return value.encode()
        try:
            key = self.secret_file.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            key = ""
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{self.secret_file}: cannot read the link-signing key ({exc})") from None
        if not key:
            raise ConfigError(f"no link-signing key: set ${self.site.secret_env}, or run 'newsletter init' "
                              f"to make {self.secret_file}")
        return key.encode()

    @property
    def secret_file(self) -> Path:
        return self.base_dir / "var" / "secret.key"

    def create_secret(self) -> Path | None:
        """Make ``var/secret.key`` (a random key, mode 0600) when ``$NEWSLETTER_SECRET`` is
        unset and there is none yet; the path when made, else None.  Called by
        ``newsletter init`` and ``newsletter demo``: without a key every signed link
        would be forgeable, and a laptop install still needs one (var/ is git-ignored)."""
        if os.environ.get(self.site.secret_env) or self.secret_file.exists():
            return None
        self.secret_file.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.secret_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # made by a concurrent init
            return None
        with os.fdopen(fd, "w") as fh:
            fh.write(os.urandom(32).hex())
        return self.secret_file


def _timezone(r: OptionReader, key: str, default: str) -> str:
    tz = r.text(key, default)
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        r.fail(key, f"unknown time zone '{tz}'")
    return tz


def _url(r: OptionReader, key: str, *, required: bool = False) -> str:
    value = r.text(key, required=required)
    if not re.match(r"^https?://[^/\s]+", value) or url_problem(value):
        r.fail(key, f"expected an http(s) URL, got {_shown(value)}")
    return value.rstrip("/")


NOTICE_KEYS = ("title", "text", "link", "link_label", "image", "image_alt")


def parse_notice(r: OptionReader) -> dict[str, str]:
    """An お知らせ block (config's [publications.notice], or a file for one
    edition): {} when empty.  Links and the image must be http(s) URLs; an
    image needs its alt text (what a reader with images blocked sees)."""
    notice = {k: (r.text(k, "", lines=k == "text") or "").strip() for k in NOTICE_KEYS}
    r.finish()
    if not any(notice.values()):
        return {}
    if not (notice["title"] or notice["text"]):
        r.fail("title", "a notice needs a title or a text")
    for key in ("link", "image"):
        if notice[key]:
            problem = url_problem(notice[key])
            if problem:
                r.fail(key, problem)
    if notice["image"] and not notice["image_alt"]:
        r.fail("image_alt", "an image needs its alt text (shown when images are blocked)")
    return {k: v for k, v in notice.items() if v}


def load_notice(path: Path) -> dict[str, str]:
    """An お知らせ block from a TOML file (the keys of :func:`parse_notice`);
    errors name the file and the key."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: {exc}") from None
    try:
        return parse_notice(OptionReader(data, prefix="", file=Path(path)))
    except ConfigError as exc:
        raise InputError(str(exc)) from None


def resolve_storage_url(url: str, base_dir: Path) -> str:
    """Make a relative SQLite path relative to the config folder, not the cwd."""
    m = re.match(r"^(sqlite(?:\+\w+)?):///(.*)$", url)
    if m and m.group(2) and m.group(2) != ":memory:" and not m.group(2).startswith("/"):
        return f"{m.group(1)}:///{(base_dir / m.group(2)).resolve()}"
    return url


def find_config_path(explicit: str | os.PathLike | None) -> Path:
    if explicit:
        return Path(explicit)
    env = os.environ.get(ENV_CONFIG)
    if env:
        return Path(env)
    return Path("config.toml")


def load_config(path: str | os.PathLike | None = None) -> Config:
    file = find_config_path(path).absolute()
    try:
        raw = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{file}: config file not found (use --config PATH or $NEWSLETTER_CONFIG)") from None
    except IsADirectoryError:
        raise ConfigError(f"{file}: is a folder, not a config file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{file.name}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file.name}: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{file.name}: nested too deeply") from None
    return parse_config(raw, file)


def _parse_site(r: OptionReader) -> Site:
    site = Site(
        name=r.text("name", required=True),
        base_url=_url(r, "base_url", required=True),
        secret_env=r.text("secret_env", "NEWSLETTER_SECRET"),
        language=r.text("language", "ja", choices=LANGUAGES),
        timezone=_timezone(r, "timezone", "Asia/Tokyo"),
        old_secrets_env=r.text("old_secrets_env", "NEWSLETTER_OLD_SECRETS"),
    )
    r.finish()
    return site


def _parse_sender(r: OptionReader) -> Sender:
    sender = Sender(
        name=r.text("name", required=True),
        address=r.address("address", required=True),
        reply_to=r.address("reply_to"),
        postal_address=r.text("postal_address", required=True, lines=True),
        contact=r.text("contact", required=True, lines=True),
        bounce_address=r.address("bounce_address"),
        unsubscribe_mailto=r.address("unsubscribe_mailto"),
    )
    r.finish()
    return sender


def _parse_storage(r: OptionReader, base: Path) -> str:
    file_url = r.text("url", "sqlite:///var/newsletter.db")  # read first: it must count as a known key
    r.finish()
    return resolve_storage_url(os.environ.get(ENV_STORAGE_URL) or file_url, base)


def _parse_provider(r: OptionReader) -> tuple[ProviderConfig, DeliverySettings]:
    """The engine's keys of ``[provider]`` are read here; the rest are the provider's
    own options, checked by the provider (:func:`newsletter.providers.load_provider`)."""
    kind = r.text("kind", "file")
    if not SLUG_RE.match(kind):
        r.fail("kind", f"invalid provider kind {_shown(kind)}")
    delivery = _parse_delivery(r)
    options = {k: v for k, v in r.data.items() if k != "kind" and k not in ENGINE_KEYS}
    return ProviderConfig(kind=kind, options=MappingProxyType(options)), delivery


def _parse_paths(r: OptionReader, base: Path) -> tuple[Path, Path]:
    paths = base / r.text("templates", "templates"), base / r.text("subscribers", "subscribers")
    r.finish()
    return paths


def _tables(top: OptionReader, key: str, what: str) -> list[OptionReader]:
    raw = top.get(key, list, None)
    if not raw:
        top.fail(key, f"at least one [[{key}]] table is required ({what})")
    return [_table(top.file, f"{key}[{i}]", item) for i, item in enumerate(raw)]


def _parse_fields(top: OptionReader) -> tuple[Field, ...]:
    fields: list[Field] = []
    for r in _tables(top, "fields", "slug and name"):
        slug = r.text("slug", required=True)
        if not SLUG_RE.match(slug):
            r.fail("slug", f"invalid slug {_shown(slug)} (lowercase letters, digits and '-')")
        if any(f.slug == slug for f in fields):
            r.fail("slug", f"duplicate field slug '{slug}'")
        fields.append(Field(slug=slug, name=r.text("name", required=True)))
        r.finish()
    return tuple(fields)


def _parse_publication(r: OptionReader, fields: tuple[Field, ...], site: Site) -> Publication:
    slugs = [f.slug for f in fields]
    slug = r.text("slug", required=True)
    if not SLUG_RE.match(slug):
        r.fail("slug", f"invalid slug {_shown(slug)} (lowercase letters, digits and '-')")
    pub_fields = r.get("fields", list, slugs)
    for f in pub_fields:
        if not isinstance(f, str):
            r.fail("fields", f"must be a list of field slugs, not a list with {_type_name(f)} ({_shown(f)})")
        if f not in slugs:
            r.fail("fields", f"unknown field {_shown(f)} (known: {', '.join(sorted(slugs))})")
    tz = _timezone(r, "timezone", site.timezone)
    schedule = r.text("schedule", required=True)
    try:
        cron_trigger(schedule, tz)
    except ValueError as exc:
        r.fail("schedule", f"invalid cron expression '{schedule}': {exc}")
    pub = Publication(
        slug=slug,
        title=r.text("title", required=True),
        fields=tuple(f for f in slugs if f in pub_fields),
        schedule=schedule,
        timezone=tz,
        max_articles=r.integer("max_articles", 20, minimum=1, maximum=1000),
        charset=r.text("charset", "utf-8", choices=CHARSETS),
        full_text=r.boolean("full_text", False),
        language=r.text("language", site.language, choices=LANGUAGES),
        description=r.get("description", str, ""),
        text_width=r.integer("text_width", 70, minimum=30, maximum=1000),
        on_holiday=r.text("on_holiday", "send", choices=ON_HOLIDAY),
        misfire_grace=r.duration("misfire_grace", "6h"),
        approval=r.text("approval", "none", choices=APPROVAL),
        tracking=r.text("tracking", "off", choices=TRACKING_MODES),
        tracking_retention=r.duration("tracking_retention", "400d", positive=True),
        notice=tuple(parse_notice(_table(r.file, f"{r.prefix}.notice", r.get("notice", dict, {}))).items()),
    )
    problem = text_problem(pub.description)
    if problem:
        r.fail("description", problem)
    r.finish()
    return pub


def _parse_publications(top: OptionReader, fields: tuple[Field, ...], site: Site) -> tuple[Publication, ...]:
    pubs: list[Publication] = []
    for r in _tables(top, "publications", "slug, title, schedule"):
        pub = _parse_publication(r, fields, site)
        if any(p.slug == pub.slug for p in pubs):
            r.fail("slug", f"duplicate publication slug '{pub.slug}'")
        pubs.append(pub)
    return tuple(pubs)


def parse_config(raw: dict, file: Path) -> Config:
    """The whole file, one function per table; each refuses keys it does not know."""
    base = file.parent
    top = OptionReader(raw, prefix="", file=file)
    for required in ("site", "sender"):
        if required not in raw:
            top.fail(required, "missing required table")
    site = _parse_site(_table(file, "site", top.get("site", dict)))
    sender = _parse_sender(_table(file, "sender", top.get("sender", dict)))
    storage_url = _parse_storage(_table(file, "storage", top.get("storage", dict, {})), base)
    provider, delivery = _parse_provider(_table(file, "provider", top.get("provider", dict, {"kind": "file"})))
    templates_dir, subscribers_dir = _parse_paths(_table(file, "paths", top.get("paths", dict, {})), base)
    fields = _parse_fields(top)
    publications = _parse_publications(top, fields, site)
    calendar = _parse_calendar(_table(file, "calendar", top.get("calendar", dict, {})))
    web = _parse_web(_table(file, "web", top.get("web", dict, {})), base)
    bounces = _parse_bounces(_table(file, "bounces", top.get("bounces", dict, {})))
    dkim = _parse_dkim(_table(file, "dkim", top.get("dkim", dict)), sender.address) if "dkim" in raw else None
    top.finish()
    return Config(
        path=file,
        site=site,
        sender=sender,
        storage_url=storage_url,
        provider=provider,
        delivery=delivery,
        fields=fields,
        publications=publications,
        templates_dir=templates_dir,
        subscribers_dir=subscribers_dir,
        calendar=calendar,
        web=web,
        bounces=bounces,
        dkim=dkim,
    )
