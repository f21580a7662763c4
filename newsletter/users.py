"""People who act on editions: users, roles, password hashing.

Rules kept here:

- A user has a unique name (what the audit log records), an email, one role and
  an optional password.  Roles and what they may do (``CAN``):

  ==========  ====================================================================
  editor      create and edit drafts (articles, order, subject, lead, afterword)
  approver    what an editor does, and approve / unapprove
  operator    schedule, send, pause, resume, cancel
  admin       everything
  ==========  ====================================================================

  The checks run only for a *named* actor; on a publication with ``approval =
  "required"`` editing and approving need one (editions/state.py).
- Passwords are hashed with argon2id (``argon2-cffi``'s defaults, RFC 9106's
  recommended profile); only the hash is stored, and a hash made with older
  parameters is re-hashed on the next successful check.  A password never comes
  from the command line (argv is visible to every user of the machine): the CLI
  reads it from a prompt or stdin.
- Console sessions (web/admin/auth.py) are rows; :func:`logout_all` deletes a
  user's rows, and disabling a user does too.
- A disabled user keeps their row (the audit log names them) but cannot act or
  log in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from .errors import InputError
from .store import sessions as sessions_q
from .store import users as q
from .store.tables import utcnow
from .subscribers import normalize_email

ROLES = ("editor", "approver", "operator", "admin")
CAN: dict[str, frozenset[str]] = {
    "edit": frozenset({"editor", "approver", "admin"}),
    "approve": frozenset({"approver", "admin"}),
    "operate": frozenset({"operator", "approver", "admin"}),
    # The console's rooms beyond editions: personal data only for operators and admins.
    "subscribers": frozenset({"operator", "admin"}),
    "audit": frozenset({"operator", "approver", "admin"}),
    "users": frozenset({"admin"}),
}
INTERFACES = ("cli", "daemon", "console", "delivery")  # "delivery": the engine's own rows (state.ENGINE)
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MIN_PASSWORD = 10

_hasher = PasswordHasher()


@dataclass(frozen=True)
class Actor:
    """Who does something, and through which interface.  ``name`` None: nobody named
    (the daemon, or the CLI without ``--as``)."""

    name: str | None
    interface: str = "cli"
    role: str | None = None

    def may(self, what: str) -> bool:
        return self.name is None or self.role in CAN[what]

    def __str__(self) -> str:
        return self.name or ("the daemon" if self.interface == "daemon" else "nobody named")


DAEMON = Actor(None, "daemon")


def check_name(name: str) -> str:
    if not NAME_RE.match(name or ""):
        raise InputError(f"user name '{name}': use 1-64 letters, digits, '.', '_' or '-' (starting with a letter "
                         "or digit)")
    return name


def check_role(role: str) -> str:
    if role not in ROLES:
        raise InputError(f"--role: expected one of {', '.join(ROLES)}, got '{role}'")
    return role


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise InputError(f"password: at least {MIN_PASSWORD} characters")
    return _hasher.hash(password)


def add_user(engine: Engine, name: str, email: str, role: str, password: str | None = None) -> None:
    check_name(name)
    check_role(role)
    try:
        address = normalize_email(email)
    except ValueError as exc:
        raise InputError(f"--email: {exc}") from None
    values = {"name": name, "email": address, "role": role, "disabled": False,
              "password_hash": hash_password(password) if password is not None else None}
    try:
        with engine.begin() as conn:
            q.insert(conn, values, utcnow())
    except IntegrityError:
        raise InputError(f"user {name}: already exists") from None


def set_password(engine: Engine, name: str, password: str) -> None:
    hashed = hash_password(password)
    with engine.begin() as conn:
        if not q.change(conn, name, {"password_hash": hashed}, utcnow()):
            raise InputError(f"user {name}: no such user")


def disable(engine: Engine, name: str) -> bool:
    """Returns False when the user was already disabled."""
    with engine.begin() as conn:
        row = q.get(conn, name)
        if row is None:
            raise InputError(f"user {name}: no such user")
        if row.disabled:
            return False
        q.change(conn, name, {"disabled": True}, utcnow())
        sessions_q.delete_for_user(conn, name)
    return True


def logout_all(engine: Engine, name: str) -> int:
    """Ends every console session of user ``name``; how many there were."""
    with engine.begin() as conn:
        if q.get(conn, name) is None:
            raise InputError(f"user {name}: no such user")
        return sessions_q.delete_for_user(conn, name)


def verify_password(engine: Engine, name: str, password: str) -> bool:
    """True for an enabled user with this password (same answer time for an unknown name)."""
    with engine.connect() as conn:
        row = q.get(conn, name)
    stored = row.password_hash if row is not None and not row.disabled else None
    try:
        _hasher.verify(stored or _dummy(), password)
    except (VerificationError, InvalidHashError):
        return False
    if stored is None:
        return False
    if _hasher.check_needs_rehash(stored):
        with engine.begin() as conn:
            q.change(conn, name, {"password_hash": _hasher.hash(password)}, utcnow())
    return True


def actor(engine: Engine, name: str | None, interface: str = "cli") -> Actor:
    """The acting user by name (``--as`` / ``$NEWSLETTER_USER``), or nobody named."""
    if not name:
        return Actor(None, interface)
    with engine.connect() as conn:
        row = q.get(conn, name)
    if row is None:
        raise InputError(f"--as {name}: no such user (see 'newsletter user list')")
    if row.disabled:
        raise InputError(f"--as {name}: this user is disabled")
    return Actor(row.name, interface, row.role)


def list_users(engine: Engine):
    with engine.connect() as conn:
        return q.list_users(conn)


@cache
def _dummy() -> str:
    return _hasher.hash("not a password of anyone")
