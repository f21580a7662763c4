"""Load and validate ``config.toml`` into frozen objects.

Every error names the file and the key (``config.toml: publications[1].schedule:
invalid cron expression '0 25 * * *' ...``).  Relative paths resolve against the
config file's folder.  Secrets never live here: keys ending in ``_env`` name the
environment variable that holds them.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from email_validator import EmailNotValidError, validate_email

from .cron import cron_trigger
from .errors import ConfigError

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


ENGINE_KEYS = (
    "connections", "rate", "hourly_quota", "daily_quota", "domain_limits", "retry_for",
    "hard_bounce_limit", "max_errors", "batch_size", "lease_seconds",
)
_RATE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|sec|second|m|min|minute|h|hour)\s*$")
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)\s*$")
_UNIT_SECONDS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600, "d": 86400}


def parse_rate(text: str) -> Rate:
    m = _RATE_RE.match(text)
    if not m or float(m.group(1)) <= 0:
        raise ValueError(f"invalid rate '{text}' (expected e.g. \"50/s\", \"300/m\" or \"10000/h\")")
    return Rate(float(m.group(1)), _UNIT_SECONDS[m.group(2)])


def _parse_delivery(r: _Reader) -> DeliverySettings:
    def positive_int(key: str, default):
        value = r.get(key, int, default)
        if value is not None and value < 1:
            r.fail("must be at least 1", key)
        return value

    rate = None
    if "rate" in r.data:
        try:
            rate = parse_rate(r.get("rate", str))
        except ValueError as exc:
            r.fail(str(exc), "rate")
    retry_for = r.get("retry_for", (str, int), "3d")
    if isinstance(retry_for, int):
        retry_seconds = float(retry_for)
    else:
        m = _DURATION_RE.match(retry_for)
        if not m:
            r.fail(f"invalid duration '{retry_for}' (expected e.g. \"3d\", \"12h\" or seconds)", "retry_for")
        retry_seconds = float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    limits = []
    raw_limits = r.get("domain_limits", list, [])
    for i, item in enumerate(raw_limits):
        sub = _Reader(r.file, f"provider.domain_limits[{i}]", item)
        domains = sub.get("domains", list, required=True)
        if not domains or not all(isinstance(d, str) and d.strip() for d in domains):
            sub.fail("expected a list of domain names", "domains")
        try:
            limit_rate = parse_rate(sub.get("rate", str, required=True))
        except ValueError as exc:
            sub.fail(str(exc), "rate")
        sub.done()
        limits.append(DomainLimit(tuple(d.strip().lower() for d in domains), limit_rate))
    lease = r.get("lease_seconds", (int, float), 120)
    if lease <= 0:
        r.fail("must be more than 0", "lease_seconds")
    return DeliverySettings(
        connections=positive_int("connections", 1),
        rate=rate,
        hourly_quota=positive_int("hourly_quota", None),
        daily_quota=positive_int("daily_quota", None),
        domain_limits=tuple(limits),
        retry_for_seconds=retry_seconds,
        hard_bounce_limit=positive_int("hard_bounce_limit", 1),
        max_errors=positive_int("max_errors", 50),
        batch_size=positive_int("batch_size", 500),
        lease_seconds=float(lease),
    )


ON_HOLIDAY = ("send", "skip", "next_business_day")
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


def _duration(r: _Reader, key: str, default: str) -> float:
    """Seconds from "30m", "6h", "2d" or an integer of seconds."""
    value = r.get(key, (str, int), default)
    if isinstance(value, int):
        if value < 0:
            r.fail("must not be negative", key)
        return float(value)
    m = _DURATION_RE.match(value)
    if not m:
        r.fail(f"invalid duration '{value}' (expected e.g. \"30m\", \"6h\", \"2d\" or seconds)", key)
    return float(m.group(1)) * _UNIT_SECONDS[m.group(2)]


def _parse_calendar(r: _Reader) -> CalendarSettings:
    closure = None
    raw = r.get("closure", list, ["12-29", "01-03"])
    if raw:
        if len(raw) != 2 or not all(isinstance(x, str) for x in raw):
            r.fail('expected ["MM-DD", "MM-DD"] (first and last day, inclusive) or [] for none', "closure")
        ends = []
        for x in raw:
            m = re.match(r"^(\d{1,2})-(\d{1,2})$", x.strip())
            try:
                if not m:
                    raise ValueError
                date(2000, int(m.group(1)), int(m.group(2)))  # a leap year: 02-29 is a day
            except ValueError:
                r.fail(f"invalid day '{x}' (expected MM-DD)", "closure")
            ends.append((int(m.group(1)), int(m.group(2))))
        closure = (ends[0], ends[1])
    dates = []
    for x in r.get("closed_dates", list, []):
        try:
            dates.append(date.fromisoformat(x) if isinstance(x, str) else x)
        except ValueError:
            r.fail(f"invalid date '{x}' (expected YYYY-MM-DD)", "closed_dates")
        if not isinstance(dates[-1], date):
            r.fail(f"invalid date {x!r} (expected YYYY-MM-DD)", "closed_dates")
    r.done()
    return CalendarSettings(closure=closure, closed_dates=tuple(sorted(set(dates))))


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


def _parse_dkim(file: Path, raw: Any, sender_address: str) -> DkimSettings | None:
    if raw is None:
        return None
    r = _Reader(file, "dkim", raw)
    domain = r.text("domain", sender_address.rpartition("@")[2])
    if not _SELECTOR_RE.match(domain) or "." not in domain:
        r.fail(f"not a domain name: '{domain}'", "domain")

    def key_source(prefix: str, required: bool) -> tuple[str | None, str | None, str | None]:
        selector = r.get(f"{prefix}selector", str, None)
        env = r.get(f"{prefix}private_key_env", str, None)
        path = r.get(f"{prefix}private_key_file", str, None)
        if selector is None:
            if required:
                r.fail("missing required key", f"{prefix}selector")
            if env or path:
                r.fail("a key without a selector", f"{prefix}selector")
            return None, None, None
        if not _SELECTOR_RE.match(selector):
            r.fail(f"not a DNS label: '{selector}'", f"{prefix}selector")
        if bool(env) == bool(path):
            r.fail("give exactly one of private_key_env (PEM in an environment variable) or private_key_file",
                   f"{prefix}private_key_env")
        return selector, env, path

    selector, env, path = key_source("", True)
    ed_selector, ed_env, ed_path = key_source("ed25519_", False)
    algorithm = r.get("algorithm", str, "rsa-sha256")
    if algorithm == "ed25519-sha256":
        r.fail("the main signature stays rsa-sha256 (receivers without Ed25519 verify it); add Ed25519 "
               "alongside with ed25519_selector and ed25519_private_key_env", "algorithm")
    if algorithm != "rsa-sha256":
        r.fail(f"expected rsa-sha256, got '{algorithm}'", "algorithm")
    r.done()
    return DkimSettings(domain.lower(), selector, env, path, ed_selector, ed_env, ed_path)


_WINDOW_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)?\s*(s|m|h|d)\s*$")


def _web_duration(r: _Reader, key: str, default: str) -> float:
    value = r.get(key, (str, int), default)
    if isinstance(value, int):
        seconds = float(value)
    else:
        m = _DURATION_RE.match(value)
        if not m:
            r.fail(f"invalid duration '{value}' (expected e.g. \"72h\", \"30d\" or seconds)", key)
        seconds = float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    if seconds <= 0:
        r.fail("must be more than 0", key)
    return seconds


def _window_limit(r: _Reader, key: str, default: WindowLimit) -> WindowLimit:
    if key not in r.data:
        r.used.add(key)
        return default
    text = r.get(key, str)
    m = _WINDOW_RE.match(text)
    if not m or int(m.group(1)) < 1:
        r.fail(f"invalid limit '{text}' (expected e.g. \"10/h\", \"3/d\" or \"5/10m\")", key)
    return WindowLimit(int(m.group(1)), float(m.group(2) or 1) * _UNIT_SECONDS[m.group(3)])


def _str_list(r: _Reader, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
    value = r.get(key, list, list(default))
    if not all(isinstance(v, str) and v.strip() for v in value):
        r.fail("expected a list of strings", key)
    return tuple(v.strip() for v in value)


def _parse_web(file: Path, raw: Any) -> WebSettings:
    r = _Reader(file, "web", raw)
    version = r.text("consent_version", "1")
    if not version.strip():
        r.fail("must not be empty", "consent_version")
    max_body = r.get("max_body_bytes", int, 64 * 1024)
    if max_body < 1024:
        r.fail("must be at least 1024", "max_body_bytes")
    w = _Reader(file, "web.webhooks", r.get("webhooks", dict, {}))
    certs = w.get("ses_certificates", str, None)
    webhooks = WebhookSettings(
        max_age_seconds=_web_duration(w, "max_age", "1d"),
        sendgrid_public_key=w.get("sendgrid_public_key", str, None),
        sendgrid_public_key_env=w.get("sendgrid_public_key_env", str, None),
        mailgun_signing_key_env=w.get("mailgun_signing_key_env", str, None),
        postmark_username=w.get("postmark_username", str, None),
        postmark_password_env=w.get("postmark_password_env", str, None),
        ses_certificates=(file.parent / certs) if certs else None,
        ses_certificate_hosts=_str_list(w, "ses_certificate_hosts", WebhookSettings.ses_certificate_hosts),
        ses_fetch_certificates=w.get("ses_fetch_certificates", bool, False),
        ses_topic_arns=_str_list(w, "ses_topic_arns", ()),
    )
    if bool(webhooks.postmark_username) != bool(webhooks.postmark_password_env):
        w.fail("postmark_username and postmark_password_env go together", "postmark_username")
    w.done()
    settings = WebSettings(
        consent_version=version.strip(),
        confirm_expiry_seconds=_web_duration(r, "confirm_expiry", "72h"),
        signup_limit_ip=_window_limit(r, "signup_limit_ip", WindowLimit(10, 3600.0)),
        signup_limit_address=_window_limit(r, "signup_limit_address", WindowLimit(3, 86400.0)),
        max_body_bytes=max_body,
        trusted_proxies=_str_list(r, "trusted_proxies", ()),
        webhooks=webhooks,
    )
    r.done()
    return settings


def _parse_bounces(file: Path, raw: Any) -> BounceSettings:
    r = _Reader(file, "bounces", raw)
    limit = r.get("soft_limit", int, 3)
    if limit < 1:
        r.fail("must be at least 1", "soft_limit")
    settings = BounceSettings(soft_limit=limit, soft_window_seconds=_web_duration(r, "soft_window", "30d"))
    r.done()
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
        value = os.environ.get(self.site.secret_env)
        if value:
            return value.encode()
        # Without a secret every signed link would be forgeable; a laptop demo still
        # needs to run, so derive a per-installation key and store it next to the
        # database (never in the repo: var/ is ignored).
        key_file = self.base_dir / "var" / "secret.key"
        if not key_file.exists():
            key_file.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(os.urandom(32).hex())
        return key_file.read_text().strip().encode()


class _Reader:
    """Typed access to one TOML table, with errors that name the key."""

    def __init__(self, file: Path, prefix: str, data: Any):
        self.file = file
        self.prefix = prefix
        if not isinstance(data, dict):
            self.fail(f"expected a table, got {type(data).__name__}")
        self.data = data
        self.used: set[str] = set()

    def fail(self, message: str, key: str | None = None):
        where = f"{self.prefix}.{key}" if key and self.prefix else (key or self.prefix)
        raise ConfigError(f"{self.file.name}: {where}: {message}")

    def get(self, key: str, typ: type | tuple[type, ...], default: Any = ..., *, required: bool = False):
        self.used.add(key)
        if key not in self.data:
            if required or default is ...:
                self.fail("missing required key", key)
            return default
        value = self.data[key]
        if typ is int and isinstance(value, bool):
            self.fail(f"expected an integer, got {value!r}", key)
        if not isinstance(value, typ):
            names = typ.__name__ if isinstance(typ, type) else " or ".join(t.__name__ for t in typ)
            names = names.replace("str", "a string").replace("int", "an integer").replace("bool", "true/false")
            self.fail(f"expected {names}, got {value!r}", key)
        if isinstance(value, str):
            if "\r" in value or "\n" in value:
                if key not in ("postal_address", "contact", "description"):
                    self.fail("line breaks are not allowed here", key)
        return value

    def text(self, key: str, default: Any = ..., **kw) -> str:
        value = self.get(key, str, default, **kw)
        if isinstance(value, str) and not value.strip() and default is ...:
            self.fail("must not be empty", key)
        return value

    def choice(self, key: str, choices: tuple[str, ...], default: str) -> str:
        value = self.get(key, str, default)
        if value not in choices:
            self.fail(f"expected one of {', '.join(choices)}, got '{value}'", key)
        return value

    def address(self, key: str, default: Any = ...) -> str | None:
        value = self.get(key, str, default)
        if value is None:
            return None
        try:
            return validate_email(value, check_deliverability=False).normalized
        except EmailNotValidError as exc:
            self.fail(f"invalid email address '{value}': {exc}", key)

    def done(self, extra_ok: tuple[str, ...] = ()):
        unknown = sorted(set(self.data) - self.used - set(extra_ok))
        if unknown:
            self.fail("unknown key", unknown[0])


def _timezone(r: _Reader, key: str, default: str) -> str:
    tz = r.text(key, default)
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        r.fail(f"unknown time zone '{tz}'", key)
    return tz


def _url(r: _Reader, key: str, value: str) -> str:
    if not re.match(r"^https?://[^/\s]+", value):
        r.fail(f"expected an http(s) URL, got '{value}'", key)
    return value.rstrip("/")


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
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{file.name}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file.name}: {exc}") from None
    return parse_config(raw, file)


def parse_config(raw: dict, file: Path) -> Config:
    base = file.parent
    top = _Reader(file, "", raw)

    for required in ("site", "sender"):
        if required not in raw:
            top.fail("missing required table", required)
    r = _Reader(file, "site", raw["site"])
    site = Site(
        name=r.text("name", required=True),
        base_url=_url(r, "base_url", r.text("base_url", required=True)),
        secret_env=r.text("secret_env", "NEWSLETTER_SECRET"),
        language=r.choice("language", LANGUAGES, "ja"),
        timezone=_timezone(r, "timezone", "Asia/Tokyo"),
        old_secrets_env=r.text("old_secrets_env", "NEWSLETTER_OLD_SECRETS"),
    )
    r.done()

    r = _Reader(file, "sender", raw["sender"])
    sender = Sender(
        name=r.text("name", required=True),
        address=r.address("address"),
        reply_to=r.address("reply_to", None),
        postal_address=r.text("postal_address", required=True),
        contact=r.text("contact", required=True),
        bounce_address=r.address("bounce_address", None),
        unsubscribe_mailto=r.address("unsubscribe_mailto", None),
    )
    r.done()

    r = _Reader(file, "storage", raw.get("storage", {}))
    file_url = r.text("url", "sqlite:///var/newsletter.db")  # read first: it must count as a known key
    url = os.environ.get(ENV_STORAGE_URL) or file_url
    storage_url = resolve_storage_url(url, base)
    r.done()

    r = _Reader(file, "provider", raw.get("provider", {"kind": "file"}))
    kind = r.text("kind", "file")
    if not SLUG_RE.match(kind):
        r.fail(f"invalid provider kind '{kind}'", "kind")
    delivery = _parse_delivery(r)
    options = {k: v for k, v in r.data.items() if k != "kind" and k not in ENGINE_KEYS}
    provider = ProviderConfig(kind=kind, options=MappingProxyType(options))

    r = _Reader(file, "paths", raw.get("paths", {}))
    templates_dir = base / r.text("templates", "templates")
    subscribers_dir = base / r.text("subscribers", "subscribers")
    r.done()

    raw_fields = raw.get("fields")
    if not isinstance(raw_fields, list) or not raw_fields:
        top.fail("at least one [[fields]] table is required", "fields")
    fields: list[Field] = []
    for i, item in enumerate(raw_fields):
        r = _Reader(file, f"fields[{i}]", item)
        slug = r.text("slug", required=True)
        if not SLUG_RE.match(slug):
            r.fail(f"invalid slug '{slug}' (lowercase letters, digits and '-')", "slug")
        if any(f.slug == slug for f in fields):
            r.fail(f"duplicate field slug '{slug}'", "slug")
        fields.append(Field(slug=slug, name=r.text("name", required=True)))
        r.done()
    slugs = {f.slug for f in fields}

    raw_pubs = raw.get("publications")
    if not isinstance(raw_pubs, list) or not raw_pubs:
        top.fail("at least one [[publications]] table is required", "publications")
    pubs: list[Publication] = []
    for i, item in enumerate(raw_pubs):
        r = _Reader(file, f"publications[{i}]", item)
        slug = r.text("slug", required=True)
        if not SLUG_RE.match(slug):
            r.fail(f"invalid slug '{slug}' (lowercase letters, digits and '-')", "slug")
        if any(p.slug == slug for p in pubs):
            r.fail(f"duplicate publication slug '{slug}'", "slug")
        pub_fields = r.get("fields", list, [f.slug for f in fields])
        for f in pub_fields:
            if f not in slugs:
                r.fail(f"unknown field '{f}' (known: {', '.join(sorted(slugs))})", "fields")
        tz = _timezone(r, "timezone", site.timezone)
        schedule = r.text("schedule", required=True)
        try:
            cron_trigger(schedule, tz)
        except ValueError as exc:
            r.fail(f"invalid cron expression '{schedule}': {exc}", "schedule")
        max_articles = r.get("max_articles", int, 20)
        if max_articles < 1:
            r.fail("must be at least 1", "max_articles")
        text_width = r.get("text_width", int, 70)
        if text_width < 30:
            r.fail("must be at least 30 (15 full-width characters)", "text_width")
        pubs.append(
            Publication(
                slug=slug,
                title=r.text("title", required=True),
                fields=tuple(f.slug for f in fields if f.slug in pub_fields),
                schedule=schedule,
                timezone=tz,
                max_articles=max_articles,
                charset=r.choice("charset", CHARSETS, "utf-8"),
                full_text=r.get("full_text", bool, False),
                language=r.choice("language", LANGUAGES, site.language),
                description=r.get("description", str, ""),
                text_width=text_width,
                on_holiday=r.choice("on_holiday", ON_HOLIDAY, "send"),
                misfire_grace=_duration(r, "misfire_grace", "6h"),
                tracking=r.choice("tracking", TRACKING_MODES, "off"),
                tracking_retention=_duration(r, "tracking_retention", "400d"),
            )
        )
        r.done()

    calendar = _parse_calendar(_Reader(file, "calendar", raw.get("calendar", {})))

    web = _parse_web(file, raw.get("web", {}))
    bounces = _parse_bounces(file, raw.get("bounces", {}))
    dkim = _parse_dkim(file, raw.get("dkim"), sender.address)
    top.used.update({"web", "bounces", "dkim"})
    top.used.update({"site", "sender", "storage", "provider", "fields", "publications", "paths", "calendar"})
    top.done()
    return Config(
        path=file,
        site=site,
        sender=sender,
        storage_url=storage_url,
        provider=provider,
        delivery=delivery,
        fields=tuple(fields),
        publications=tuple(pubs),
        templates_dir=templates_dir,
        subscribers_dir=subscribers_dir,
        calendar=calendar,
        web=web,
        bounces=bounces,
        dkim=dkim,
    )
