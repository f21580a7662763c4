"""The schema, as SQLAlchemy Core tables.

This is the *current* shape; Alembic migrations in ``migrations/versions`` build
it step by step, and a test checks that the two agree.

Field lists (an article's or a subscriber's fields) are stored as one column of
comma-separated slugs in config order ("local-government,education").  Slugs are
validated to ``[a-z0-9-]``, so the separator cannot occur inside one; the column
doubles as the variant key when editions are rendered, and a 100,000-row import
stays one INSERT per row instead of three.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.types import TypeDecorator

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UTCDateTime(TypeDecorator):
    """Aware datetimes in, aware UTC datetimes out, on SQLite as on PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use timezone-aware UTC")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


articles = Table(
    "articles",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("guid", String(500), unique=True, nullable=True),
    Column("url", String(2000), nullable=False, unique=True),
    Column("title", String(500), nullable=False),
    Column("summary", Text, nullable=False, default=""),
    Column("body", Text, nullable=False, default=""),
    Column("body_format", String(16), nullable=False, default="markdown"),
    Column("author", String(200), nullable=False, default=""),
    Column("fields", String(500), nullable=False),
    Column("status", String(16), nullable=False, default="queued"),
    Column("publish_at", UTCDateTime, nullable=True),
    Column("priority", Integer, nullable=False, default=0),
    Column("pinned", Boolean, nullable=False, default=False),
    Column("source", String(500), nullable=False, default=""),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # A thumbnail for the mail (migration 0008): its URL and alt text, "" for none.
    Column("image_url", String(2000), nullable=False, default="", server_default=""),
    Column("image_alt", String(500), nullable=False, default="", server_default=""),
    Index("ix_articles_status", "status"),
)

subscribers = Table(
    "subscribers",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("email", String(320), nullable=False, unique=True),
    Column("name", String(200), nullable=False, default=""),
    Column("fields", String(500), nullable=False),
    # NULL: every publication whose fields overlap the subscriber's.
    Column("publications", String(500), nullable=True),
    Column("format", String(8), nullable=False, default="html"),
    Column("charset", String(16), nullable=True),
    Column("status", String(16), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("bounce_count", Integer, nullable=False, default=0, server_default="0"),
    Index("ix_subscribers_status", "status"),
)

# One row per consent event (subscribe, confirm, import, change, unsubscribe...).
# Rows survive unsubscribe: they are the proof the Act on Specified Electronic Mail asks for.
consents = Table(
    "consents",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("subscriber_id", Integer, ForeignKey("subscribers.id", ondelete="CASCADE"), nullable=False),
    Column("event", String(32), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("source", String(500), nullable=False, default=""),
    Column("ip", String(64), nullable=True),
    Column("user_agent", String(500), nullable=True),
    Column("wording_version", String(64), nullable=True),
    Column("detail", Text, nullable=True),
    Index("ix_consents_subscriber_id", "subscriber_id"),
)

editions = Table(
    "editions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("publication", String(64), nullable=False),
    Column("number", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("scheduled_for", UTCDateTime, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime, nullable=True),
    # The edition as it went out (articles, sections, dates), JSON: a resend, the
    # archive and an audit read this, never the live article rows.
    Column("content", Text, nullable=False),
    # Why the edition is paused or waiting (quota, too many errors, an operator).
    Column("note", Text, nullable=True),
    # -- the editorial workflow (editions/state.py): who made it, who changed it last,
    # the hash of ``content`` now, and what was approved (the frozen JSON and its hash).
    Column("content_hash", String(64), nullable=True),
    Column("revision", Integer, nullable=False, default=0, server_default="0"),
    Column("created_by", String(64), nullable=True),
    Column("edited_by", String(64), nullable=True),
    Column("edited_at", UTCDateTime, nullable=True),
    Column("approved_by", String(64), nullable=True),
    Column("approved_at", UTCDateTime, nullable=True),
    Column("approved_hash", String(64), nullable=True),
    Column("approved_content", Text, nullable=True),
    # 承認依頼: who asked for approval of the draft, and when (dropped when its content changes).
    Column("approval_requested_by", String(64), nullable=True),
    Column("approval_requested_at", UTCDateTime, nullable=True),
    UniqueConstraint("publication", "number", name="uq_editions_publication_number"),
    UniqueConstraint("publication", "scheduled_for", name="uq_editions_publication_scheduled_for"),
)

edition_articles = Table(
    "edition_articles",
    metadata,
    Column("edition_id", Integer, ForeignKey("editions.id", ondelete="CASCADE"), primary_key=True),
    Column("article_id", Integer, ForeignKey("articles.id", ondelete="CASCADE"), primary_key=True),
    Column("position", Integer, nullable=False),
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("edition_id", Integer, ForeignKey("editions.id", ondelete="CASCADE"), nullable=False),
    Column("subscriber_id", Integer, ForeignKey("subscribers.id", ondelete="SET NULL"), nullable=True),
    Column("email", String(320), nullable=False),
    Column("variant", String(600), nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("message_id", String(300), nullable=True),
    Column("provider_id", String(300), nullable=True),
    Column("last_reply", Text, nullable=True),
    Column("next_attempt_at", UTCDateTime, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # The recipient's domain, lower-cased: per-domain rate limits claim by it.
    Column("domain", String(255), nullable=False, default="", server_default=""),
    # A worker that claimed the row holds it until then; a crashed worker's rows
    # become claimable again when the lease runs out.
    Column("lease_until", UTCDateTime, nullable=True),
    # Which run holds the lease (random per run): every result, renewal and give-back is
    # written only WHERE the row is still pending with this token (delivery.py, "fencing").
    Column("claim_token", String(32), nullable=True),
    # Sent whole but never answered: retried once with the same Message-ID, no more.
    Column("unknown_outcomes", Integer, nullable=False, default=0, server_default="0"),
    UniqueConstraint("edition_id", "subscriber_id", name="uq_deliveries_edition_subscriber"),
    # The claim walks this index in id order and stops after the chunk: without ``id``
    # in it, every claim sorted all of an edition's pending rows (192 ms a claim at
    # 49,000 pending on PostgreSQL, growing with the edition).
    Index("ix_deliveries_edition_status_id", "edition_id", "status", "id"),
    Index("ix_deliveries_status_updated_at", "status", "updated_at"),
    # Quotas count the live claims of every process (delivery.py): only claimed rows
    # have a lease at all, so this range is a handful of entries however large the log.
    Index("ix_deliveries_lease_until", "lease_until"),
)

# -- scheduling (issue 5): the runtime state of each publication's schedule ----------
# The schedule itself (cron, time zone, holiday policy) is config.toml; this is what a
# running daemon must not forget across a restart.  Our own table rather than
# APScheduler's SQLAlchemyJobStore: see newsletter/scheduling.py.
schedules = Table(
    "schedules",
    metadata,
    Column("publication", String(64), primary_key=True),
    Column("paused", Boolean, nullable=False, default=False),
    Column("paused_at", UTCDateTime, nullable=True),
    # Every slot up to this time has been dealt with (sent, skipped or missed): the
    # catch-up after a restart starts here.
    Column("handled_until", UTCDateTime, nullable=False),
    Column("next_run_at", UTCDateTime, nullable=True),
    Column("last_slot", UTCDateTime, nullable=True),
    Column("last_run_at", UTCDateTime, nullable=True),
    Column("last_result", Text, nullable=True),
    # cron | time zone | on_holiday | calendar as last seen: a change is noticed.
    Column("signature", String(500), nullable=False, default=""),
    Column("updated_at", UTCDateTime, nullable=False),
)

# --- Many processes on one database (newsletter/workers.py) ---

# Every `newsletter run` and `newsletter worker` process: its heartbeat (``seen_at``);
# one older than its ``lease_seconds`` is shown as lost by `newsletter status`.
workers = Table(
    "workers",
    metadata,
    Column("id", String(200), primary_key=True),
    Column("role", String(16), nullable=False),  # run | worker | send
    Column("host", String(200), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("version", String(64), nullable=False),
    Column("state", String(16), nullable=False),  # running | draining
    Column("lease_seconds", Float, nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("seen_at", UTCDateTime, nullable=False),
)

# A named role one process holds at a time ("scheduler"), until ``until``: the holder
# renews it, anyone may take it once it has lapsed.
leases = Table(
    "leases",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("holder", String(200), nullable=True),
    Column("until", UTCDateTime, nullable=False),
    Column("acquired_at", UTCDateTime, nullable=True),
)

# Limits shared by every sending process: a token bucket per limit ("rate",
# "domain:…": ``tokens`` as of ``stamp``) and provider-wide pauses ("throttle": no
# sending before ``until``).
shared_limits = Table(
    "shared_limits",
    metadata,
    Column("key", String(300), primary_key=True),
    Column("tokens", Float, nullable=False),
    Column("stamp", UTCDateTime, nullable=False),
    Column("until", UTCDateTime, nullable=True),
    Column("reason", Text, nullable=True),
)

# --- The subscriber web service (newsletter/web, newsletter/bounces.py) ---

# A sign-up waiting for its confirmation link: what the person asked for, and
# where from.  The subscriber row changes only on confirmation; ``confirmed_at``
# makes the link single-use.
signups = Table(
    "signups",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("subscriber_id", Integer, ForeignKey("subscribers.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(200), nullable=False, default=""),
    Column("fields", String(500), nullable=False),
    Column("format", String(8), nullable=False),
    Column("ip", String(64), nullable=True),
    Column("user_agent", String(500), nullable=True),
    Column("wording_version", String(64), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("confirmed_at", UTCDateTime, nullable=True),
    Index("ix_signups_subscriber_id", "subscriber_id"),
)

# Bounces, complaints and mailed unsubscribe requests, one row per provider
# event: the unique (source, event_id) makes every intake idempotent, and the
# soft bounces of the last window are counted from here.  No address is kept:
# an erased subscriber leaves nothing behind (ON DELETE CASCADE).
mail_events = Table(
    "mail_events",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("source", String(32), nullable=False),
    Column("event_id", String(300), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("subscriber_id", Integer, ForeignKey("subscribers.id", ondelete="CASCADE"), nullable=True),
    Column("at", UTCDateTime, nullable=False),
    Column("detail", Text, nullable=True),
    UniqueConstraint("source", "event_id", name="uq_mail_events_source_event_id"),
    Index("ix_mail_events_subscriber_kind_at", "subscriber_id", "kind", "at"),
)

# Fixed-window counters for the sign-up form's per-IP and per-address limits
# (in the database, so that several server processes share them).
rate_limits = Table(
    "rate_limits",
    metadata,
    Column("key", String(200), primary_key=True),
    Column("window_start", UTCDateTime, nullable=False),
    Column("count", Integer, nullable=False),
)


# --- The editorial workflow (issue 13): users, the audit log, content versions ---

# People who act on editions (CLI ``--as``, the console).  Passwords are argon2
# hashes (newsletter/users.py); a disabled user keeps their row so that the audit
# log still names them.
users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("email", String(320), nullable=False),
    Column("role", String(16), nullable=False),
    Column("password_hash", String(200), nullable=True),
    Column("disabled", Boolean, nullable=False, default=False, server_default=false()),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

# One row per state change: who (a user name, or NULL for the daemon / nobody
# named), when, what, through which interface (cli, daemon, console).
audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("at", UTCDateTime, nullable=False),
    Column("actor", String(64), nullable=True),
    Column("interface", String(16), nullable=False),
    Column("action", String(32), nullable=False),
    Column("publication", String(64), nullable=True),
    Column("edition_id", Integer, ForeignKey("editions.id", ondelete="CASCADE"), nullable=True),
    Column("detail", Text, nullable=True),
    Index("ix_audit_log_edition_id", "edition_id"),
)

# Every content an edition had while it was a draft, by hash: approving with the
# hash of an older preview says what changed since.
edition_versions = Table(
    "edition_versions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("edition_id", Integer, ForeignKey("editions.id", ondelete="CASCADE"), nullable=False),
    Column("hash", String(64), nullable=False),
    Column("content", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("edition_id", "hash", name="uq_edition_versions_edition_id"),
)

# --- Reading statistics (newsletter/stats.py, issue 15) ---

# One row per open, click or provider event.  ``reader`` is the message's key
# from its signed link: ``d<delivery id>`` under tracking = "per-subscriber",
# a random ``m<hex>`` under "aggregate" (nothing in the database maps it to a
# person), NULL when unknown.  ``subscriber_id`` is set under "per-subscriber"
# only, and goes with the subscriber (ON DELETE CASCADE: erasure removes them).
stats_events = Table(
    "stats_events",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("edition_id", Integer, ForeignKey("editions.id", ondelete="CASCADE"), nullable=False),
    Column("kind", String(16), nullable=False),          # open | click | delivered
    Column("link", Integer, nullable=True),               # index into the frozen content's links
    Column("article_id", Integer, nullable=True),
    Column("part", String(8), nullable=True),             # html | text: where the clicked link was
    Column("fields", String(500), nullable=True),         # the variant's fields, comma-separated
    Column("reader", String(40), nullable=True),
    Column("subscriber_id", Integer, ForeignKey("subscribers.id", ondelete="CASCADE"), nullable=True),
    Column("machine", Boolean, nullable=False, default=False),
    Column("reason", String(32), nullable=True),          # why machine (apple-mpp, scanner, head, burst)
    Column("via_proxy", Boolean, nullable=False, default=False),
    Column("source", String(32), nullable=False),         # web | sendgrid | mailgun | postmark
    # The provider's id of the event (its webhook retries carry the same one); None for ours.
    Column("event_id", String(300), nullable=True),
    Column("sent_at", UTCDateTime, nullable=True),
    Column("at", UTCDateTime, nullable=False),
    UniqueConstraint("source", "event_id", name="uq_stats_events_source_event_id"),
    Index("ix_stats_events_edition_id_kind", "edition_id", "kind"),
    Index("ix_stats_events_at", "at"),
)

# What ``stats prune`` keeps of the events it deletes: counts, never a reader.
stats_counts = Table(
    "stats_counts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("edition_id", Integer, ForeignKey("editions.id", ondelete="CASCADE"), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("link", Integer, nullable=True),
    Column("article_id", Integer, nullable=True),
    Column("part", String(8), nullable=True),
    Column("fields", String(500), nullable=True),
    Column("machine", Boolean, nullable=False),
    Column("via_proxy", Boolean, nullable=False),
    Column("hour", Integer, nullable=True),               # hours after sending, when known
    Column("events", Integer, nullable=False),
    Column("readers", Integer, nullable=False),           # distinct readers among those events
    Index("ix_stats_counts_edition_id", "edition_id"),
)

# --- The console (issue 14): server-side sessions -------------------------------

# One row per signed-in browser, keyed by the sha256 of the cookie's token.
console_sessions = Table(
    "console_sessions",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("user_name", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("last_seen_at", UTCDateTime, nullable=False),
    Column("ip", String(64), nullable=True),
    Index("ix_console_sessions_user_name", "user_name"),
)
