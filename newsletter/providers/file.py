"""The ``file`` provider: messages become files instead of leaving the machine.

The default provider, so that a fresh install "sends" safely.  Two layouts:

``eml``
    one ``<delivery id>-<recipient>.eml`` per message in one folder; a resend
    of the same delivery replaces its file instead of adding a second one.
    Mail without a delivery row (id 0: test sends, confirmation mails) is
    never replaced: ``00000000-<UTC time>-<random>-<recipient>.eml``.
``maildir``
    a Maildir (``tmp``/``new``/``cur``) any mail client or ``mutt -f`` can open.

Either way a file appears complete or not at all: it is written under another
name in the same folder, fsynced, then renamed into place, so a reader (or a
crash) never sees half a message.

A write error (disk full, a path under a file, no permission) fails that message
(``permanent``) with the OS error in the reply: it is the machine's problem, not
the reader's, and nothing fixes it by waiting, so it must show — ``edition send``
lists it and exits 1, ``max_errors`` in a row pause the edition, and after the fix
``edition retry N --failed`` puts those messages back (they are retryable: the
reply carries no 5.1.x code, the address is not blamed).
"""

from __future__ import annotations

import itertools
import os
import re
import secrets
import socket
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

from newsletter.interfaces import OutgoingMessage, SendResult
from newsletter.providers import OptionReader

__all__ = ["FileProvider"]

Format = Literal["eml", "maildir"]
_FORMATS = ("eml", "maildir")

_UNSAFE = re.compile(r"[^A-Za-z0-9._@+-]")
_MAX_NAME_PART = 100

# Maildir names must be unique per host even within one second and one process;
# a counter plus random bits make that hold across threads too.
_deliveries = itertools.count(1)


class FileProvider:
    """Writes each message to a file under ``path``."""

    name = "file"
    sends_raw_mime = True  # hands over OutgoingMessage.data as it is (a DKIM signature survives)
    max_batch = 500

    def __init__(self, path: Path, format: Format = "eml", max_batch: int = 500):
        if format not in _FORMATS:
            raise ValueError(f"unknown format {format!r}")
        self.path = Path(path)
        self.format: Format = format
        self.max_batch = max_batch

    @classmethod
    def from_config(cls, options: Mapping[str, object], base_dir: Path) -> FileProvider:
        r = OptionReader(options, cls.name)
        path = Path(r.text("path", "var/outbox"))
        fmt = r.text("format", "eml", choices=_FORMATS)
        max_batch = r.integer("max_batch", cls.max_batch, minimum=1)
        r.finish()
        if not path.is_absolute():
            path = Path(base_dir) / path
        return cls(path, fmt, max_batch)  # type: ignore[arg-type]

    def send(self, batch: Sequence[OutgoingMessage]) -> list[SendResult]:
        target = self.path / "new" if self.format == "maildir" else self.path
        try:
            self._prepare()
        except OSError as exc:
            reply = f"outbox {self.path}: cannot create it: {_os_error(exc)}"
            return [SendResult(m.delivery_id, "permanent", reply=reply) for m in batch]

        results = []
        for message in batch:
            try:
                if self.format == "maildir":
                    name = self._write_maildir(message.data)
                else:
                    name = self._write_eml(message)
            except OSError as exc:
                results.append(SendResult(message.delivery_id, "permanent",
                                          reply=f"outbox {target}: cannot write: {_os_error(exc)}"))
            else:
                results.append(SendResult(message.delivery_id, "accepted", provider_id=name,
                                          reply=f"written to {target / name}"))

        if any(r.status == "accepted" for r in results):
            # The renames themselves live in the directory; without this a power
            # cut could forget files we already reported as accepted.
            _fsync_directory(target)
        return results

    def close(self) -> None:
        """Nothing is held open between batches."""

    def _prepare(self) -> None:
        if self.format == "maildir":
            for sub in ("tmp", "new", "cur"):
                (self.path / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
        else:
            self.path.mkdir(parents=True, exist_ok=True)

    def _write_eml(self, message: OutgoingMessage) -> str:
        recipient = _UNSAFE.sub("_", message.recipient)[:_MAX_NAME_PART]
        if message.delivery_id:
            name = f"{message.delivery_id:08d}-{recipient}.eml"
        else:
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            name = f"{0:08d}-{stamp}-{secrets.token_hex(4)}-{recipient}.eml"
        fd, temp = tempfile.mkstemp(dir=self.path, prefix=f".{name}.", suffix=".tmp")
        try:
            _write_all(fd, message.data)
            os.replace(temp, self.path / name)
        except BaseException:
            _discard(temp)
            raise
        return name

    def _write_maildir(self, data: bytes) -> str:
        name = _maildir_name()
        temp = self.path / "tmp" / name
        # O_EXCL: the Maildir spec's "if the file exists, try again later" —
        # here it cannot happen, so an existing file is a real error.
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600)
        try:
            _write_all(fd, data)
            os.rename(temp, self.path / "new" / name)
        except BaseException:
            _discard(temp)
            raise
        return name


def _os_error(exc: OSError) -> str:
    """``No space left on device [Errno 28 ENOSPC]: '/path/file'`` — the words, the code, the file."""
    import errno

    code = f" [Errno {exc.errno} {errno.errorcode.get(exc.errno, '?')}]" if exc.errno else ""
    where = f": '{exc.filename}'" if exc.filename else ""
    return f"{exc.strerror or exc}{code}{where}"


def _maildir_name() -> str:
    """A unique file name per https://cr.yp.to/proto/maildir.html (time.MusecPpidQn.host)."""
    now = time.time()
    seconds = int(now)
    usec = int((now - seconds) * 1_000_000)
    # "/" and ":" may not appear in the host part (":" starts the info suffix).
    host = socket.gethostname().replace("/", r"\057").replace(":", r"\072")
    return f"{seconds}.M{usec}P{os.getpid()}Q{next(_deliveries)}R{secrets.token_hex(4)}.{host}"


def _write_all(fd: int, data: bytes) -> None:
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _discard(path: str | os.PathLike[str]) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _fsync_directory(path: Path) -> None:
    if os.name != "posix":  # Windows cannot open a directory for fsync
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        # The files are already in place; reporting them as failed would only
        # make the engine write them a second time.
        pass
    finally:
        os.close(fd)
