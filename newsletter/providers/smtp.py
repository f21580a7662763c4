"""The ``smtp`` provider: hand messages to an SMTP server (a smarthost or an MTA).

Each message is its own transaction with a single RCPT, so the server's answer
for that one address is the message's result.  We drive ``smtplib`` at the
``mail``/``rcpt``/``data`` level rather than ``sendmail`` to see every reply code.

One connection is kept across :meth:`SMTPProvider.send` calls and replaced
lazily: when the server has hung up, answered 421, or after
``max_messages_per_connection`` transactions.  A connection found dead at
``MAIL FROM`` (the server closed an idle connection, or said 421 because it
limits messages per connection) is retried once on a fresh connection:
nothing of the message has been sent at that point, so this cannot duplicate it.
A connection lost any later counts as ``transient`` for the message in flight.

What a reply means (accepted / transient / permanent, and whether it says the
address is bad) is :mod:`newsletter.replies`; this module only talks SMTP.

A 421 before a connection has carried anything (as the greeting, or to the
first transaction on a fresh connection) is the server throttling us ("too many
connections/messages"): the result is flagged ``throttled`` and the rest of the
batch comes back untried with the same flag, so the engine pauses instead of
counting attempts.  A 421 later in a session only closes that session.

Not thread-safe: one provider instance per sending thread.
"""

from __future__ import annotations

import os
import re
import smtplib
import ssl
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal, Self

from newsletter.errors import ConfigError, TransportError
from newsletter.interfaces import OutgoingMessage, SendResult
from newsletter.providers import OptionReader
from newsletter.replies import classify_smtp_reply, enhanced_status, smtp_outcome

__all__ = ["SMTPProvider", "classify_smtp_reply", "enhanced_status", "queue_id"]

Security = Literal["none", "starttls", "tls"]
_SECURITY = ("none", "starttls", "tls")
_DEFAULT_PORT = {"none": 25, "starttls": 587, "tls": 465}

# Postfix "250 2.0.0 Ok: queued as 4XYZ", Exim "250 OK id=1abcDE-0001Xy-2Z".
_QUEUE_ID = re.compile(r"queued as\s+<?([\w.@-]+)|\bid=([\w.-]+)", re.IGNORECASE)


def queue_id(text: str) -> str | None:
    """The server's queue id from a 250 reply to DATA, when it names one."""
    match = _QUEUE_ID.search(text)
    if not match:
        return None
    return match.group(1) or match.group(2)


class _ConnectFailed(TransportError):
    """No usable connection; every message not yet tried in the batch waits."""

    def __init__(self, reply: str, *, throttled: bool = False):
        super().__init__("transient", reply)
        self.throttled = throttled


class SMTPProvider:
    """Sends through one SMTP server, reusing one connection."""

    name = "smtp"
    sends_raw_mime = True  # hands over OutgoingMessage.data as it is (a DKIM signature survives)
    max_batch = 100

    def __init__(
        self,
        host: str = "localhost",
        port: int | None = None,
        *,
        security: Security = "none",
        username: str | None = None,
        password: str | None = None,
        timeout: float = 30.0,
        envelope_from: str | None = None,
        helo: str | None = None,
        max_messages_per_connection: int = 1000,
        max_batch: int = 100,
        ssl_context: ssl.SSLContext | None = None,
    ):
        if security not in _SECURITY:
            raise ValueError(f"unknown security {security!r}")
        self.host = host
        self.port = port if port is not None else _DEFAULT_PORT[security]
        self.security: Security = security
        self.username = username
        self._password = password
        self.timeout = timeout
        self.envelope_from = envelope_from
        self.helo = helo
        self.max_messages_per_connection = max_messages_per_connection
        self.max_batch = max_batch
        self._ssl_context = ssl_context
        self._conn: smtplib.SMTP | None = None
        self._on_conn = 0

    def __repr__(self) -> str:
        return f"<SMTPProvider {self.security} {self.host}:{self.port} user={self.username!r}>"

    @classmethod
    def from_config(cls, options: Mapping[str, object], base_dir: Path) -> SMTPProvider:
        r = OptionReader(options, cls.name)
        r.forbid("password", "passwords never go in config.toml; put it in an environment "
                             "variable and name that variable in provider.password_env")
        host = r.text("host", "localhost")
        security = r.text("security", "none", choices=_SECURITY)
        port = r.integer("port", _DEFAULT_PORT[security], minimum=1, maximum=65535)
        username = r.text("username")
        password_env = r.text("password_env")
        timeout = r.number("timeout", 30.0, minimum=0.001)
        envelope_from = r.text("envelope_from")
        helo = r.text("helo")
        per_connection = r.integer("max_messages_per_connection", 1000, minimum=1)
        max_batch = r.integer("max_batch", cls.max_batch, minimum=1)
        r.finish()

        # smtplib sends these as ASCII and would raise UnicodeEncodeError mid-send.
        for key, value in (("helo", helo), ("username", username)):
            if value is not None and not value.isascii():
                raise r.fail(key, "must be ASCII")

        password = None
        if username is not None:
            if password_env is None:
                raise r.fail("password_env", "required when provider.username is set: the name of "
                                             "the environment variable that holds the password")
            password = os.environ.get(password_env)
            if password is None:
                raise r.fail("password_env", f"environment variable {password_env} is not set")
            if not password.isascii():
                raise r.fail("password_env", f"the password in {password_env} must be ASCII "
                                             "(smtplib cannot send other characters)")
        elif password_env is not None:
            raise r.fail("username", "required when provider.password_env is set")

        return cls(host, port, security=security, username=username,  # type: ignore[arg-type]
                   password=password, timeout=timeout, envelope_from=envelope_from, helo=helo,
                   max_messages_per_connection=per_connection, max_batch=max_batch)

    def send(self, batch: Sequence[OutgoingMessage]) -> list[SendResult]:
        results: list[SendResult] = []
        failure: str | None = None
        throttled = False
        for message in batch:
            if failure is None:
                try:
                    result = self._send_one(message)
                    results.append(result)
                    if result.throttled:  # do not knock again before the engine's pause
                        failure, throttled = f"not sent: {result.reply}", True
                    continue
                except _ConnectFailed as exc:
                    failure, throttled = str(exc), exc.throttled
                except ConfigError as exc:
                    # Raising would lose the results already obtained in this
                    # batch (and send them twice); only the first message may.
                    if not results:
                        raise
                    failure = str(exc)
            results.append(SendResult(message.delivery_id, "transient", reply=failure, throttled=throttled))
        return results

    @property
    def accepts_8bit(self) -> bool:
        """Whether 8-bit bodies may be sent (the server announces 8BITMIME); the
        engine asks before composing.  Opens the connection if need be."""
        try:
            conn, _ = self._connection()
        except (_ConnectFailed, ConfigError):
            return False
        return bool(conn.has_extn("8bitmime"))

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            conn.quit()
        except (smtplib.SMTPException, OSError):
            pass
        finally:
            conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- one message ---------------------------------------------------------

    def _send_one(self, message: OutgoingMessage) -> SendResult:
        conn, reused = self._connection()
        result, stale = self._transaction(conn, message)
        if stale and reused:
            conn, _ = self._connection()
            result, _ = self._transaction(conn, message)
        return result

    def _transaction(self, conn: smtplib.SMTP, message: OutgoingMessage) -> tuple[SendResult, bool]:
        """One MAIL/RCPT/DATA exchange.  The flag is true when the connection turned
        out dead before anything of the message was sent, so a retry is safe."""
        sender = self.envelope_from or message.sender
        options = self._mail_options(conn, sender, message)
        if isinstance(options, SendResult):
            return options, False
        self._on_conn += 1
        fresh = self._on_conn == 1
        stage = "MAIL FROM"
        try:
            if conn.has_extn("pipelining"):
                where = [stage]
                try:
                    code, text, stage = self._pipelined(conn, sender, options, message, where)
                except (smtplib.SMTPException, OSError):
                    stage = where[0]  # the reply we were waiting for when the connection broke
                    raise
            else:
                code, text = conn.mail(sender, options)
                if 200 <= code < 300:
                    stage = "RCPT TO"
                    code, text = conn.rcpt(message.recipient)
                if 200 <= code < 300:
                    stage = "DATA"
                    code, text = conn.docmd("DATA")
            if code == 354:
                stage = "the end of DATA"
                conn.send(_stuffed(message.data))
                stage = "the reply to DATA"
                code, text = conn.getreply()
        except (smtplib.SMTPException, OSError) as exc:
            self._drop()
            if stage == "the reply to DATA":
                # The whole message went out but we never heard whether the server
                # took it: it may be delivered.  RFC 5321 §4.1.1.4 gives the server
                # no way to tell us later, so the engine decides (see delivery.py).
                reply = f"connection lost waiting for {stage}: {_describe(exc)}"
                return SendResult(message.delivery_id, "unknown", reply=reply), False
            reply = f"connection lost at {stage}: {_describe(exc)}"
            return SendResult(message.delivery_id, "transient", reply=reply), stage == "MAIL FROM"

        reply = _reply(code, text)
        if 200 <= code < 300:
            pid = queue_id(_decode(text)) or message.message_id
            return SendResult(message.delivery_id, "accepted", provider_id=pid, reply=reply), False

        if code == 421 or code < 0:
            # 421: the server is closing the channel; -1: we no longer understand it.
            self._drop()
        else:
            self._reset()
        stale = stage == "MAIL FROM" and code == 421
        status, bad_address = smtp_outcome(code, reply)  # what the reply means: newsletter.replies
        return SendResult(message.delivery_id, status, reply=reply, bad_address=bad_address,
                          throttled=code == 421 and fresh), stale

    def _pipelined(self, conn: smtplib.SMTP, sender: str, options: list[str],
                   message: OutgoingMessage, where: list[str]) -> tuple[int, bytes, str]:
        """MAIL, RCPT and DATA in one write (RFC 2920), then their three replies in
        order: one round trip instead of three.  The addresses are bare (validated
        when they were stored, and free of CR/LF): smtplib's quoteaddr re-parses
        each with the email package's address parser.  Returns the reply that decides
        (the first that is not a success; 354 when the content may follow) and the
        stage it answered."""
        extra = (" " + " ".join(options)) if options else ""
        # UTF-8 on the wire: non-ASCII addresses only get here with SMTPUTF8 (see _mail_options).
        conn.send(f"MAIL FROM:<{sender}>{extra}\r\n"
                  f"RCPT TO:<{message.recipient}>\r\n"
                  "DATA\r\n".encode())
        decided: tuple[int, bytes, str] | None = None
        for stage, ok in (("MAIL FROM", 250), ("RCPT TO", 250), ("DATA", 354)):
            where[0] = stage  # the reply being read, for the caller when the connection drops
            code, text = conn.getreply()
            if code == 421:
                # The server is closing the channel: the replies after this one will not come.
                return code, text, stage
            if decided is None and not (code == ok or (ok == 250 and 200 <= code < 300)):
                decided = (code, text, stage)
            elif decided is not None and stage == "DATA" and code == 354:
                # A server that took DATA after refusing the sender or recipient: end
                # the empty message; _transaction's RSET then starts clean.
                conn.send(b".\r\n")
                conn.getreply()
        return decided or (354, b"", "DATA")

    def _mail_options(self, conn: smtplib.SMTP, sender: str,
                      message: OutgoingMessage) -> list[str] | SendResult:
        options: list[str] = []
        if not (sender.isascii() and message.recipient.isascii()):
            if not conn.has_extn("smtputf8"):
                return SendResult(message.delivery_id, "permanent",
                                  reply="local: address is not ASCII and the server does not offer SMTPUTF8")
            options.append("SMTPUTF8")
        if conn.has_extn("size"):
            # Lets the server refuse an oversized message before we upload it.
            options.append(f"SIZE={len(message.data)}")
        if not message.data.isascii():
            if not conn.has_extn("8bitmime"):
                return SendResult(message.delivery_id, "permanent",
                                  reply="local: 8-bit message and the server does not offer 8BITMIME")
            options.append("BODY=8BITMIME")
        return options

    # -- the connection ------------------------------------------------------

    def _connection(self) -> tuple[smtplib.SMTP, bool]:
        """The open connection and whether it was used before (may be stale)."""
        if self._conn is not None and self._on_conn >= self.max_messages_per_connection:
            self.close()
        if self._conn is not None:
            return self._conn, True
        self._conn = self._open()
        self._on_conn = 0
        return self._conn, False

    def _open(self) -> smtplib.SMTP:
        where = f"{self.host}:{self.port}"
        conn: smtplib.SMTP
        if self.security == "tls":
            conn = smtplib.SMTP_SSL(local_hostname=self.helo, timeout=self.timeout, context=self._tls())
        else:
            conn = smtplib.SMTP(local_hostname=self.helo, timeout=self.timeout)
        try:
            code, text = conn.connect(self.host, self.port)
            if code != 220:
                raise _ConnectFailed(f"{where} refused the session: {_reply(code, text)}", throttled=code == 421)
            conn.ehlo_or_helo_if_needed()
            if self.security == "starttls":
                if not conn.has_extn("starttls"):
                    raise ConfigError(f"provider.security: {where} does not offer STARTTLS")
                conn.starttls(context=self._tls())
                conn.ehlo()  # RFC 3207: forget what was said before TLS
            if self.username is not None:
                self._login(conn, where)
        except _ConnectFailed:
            conn.close()
            raise
        except ConfigError:
            conn.close()
            raise
        except (smtplib.SMTPException, OSError) as exc:
            conn.close()
            raise _ConnectFailed(f"cannot connect to {where}: {_describe(exc)}") from exc
        return conn

    def _login(self, conn: smtplib.SMTP, where: str) -> None:
        assert self.username is not None and self._password is not None
        try:
            conn.login(self.username, self._password)
        except smtplib.SMTPAuthenticationError as exc:
            if 400 <= exc.smtp_code < 500:  # e.g. 454: the server's problem, try later
                raise _ConnectFailed(f"{where} login: {_reply(exc.smtp_code, exc.smtp_error)}") from exc
            raise ConfigError(f"provider.username: {where} refused the login for {self.username!r}: "
                              f"{_reply(exc.smtp_code, exc.smtp_error)}") from exc
        except smtplib.SMTPNotSupportedError as exc:
            raise ConfigError(f"provider.username: {where} does not offer AUTH (is security set?)") from exc

    def _tls(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            self._ssl_context = ssl.create_default_context()
        return self._ssl_context

    def _drop(self) -> None:
        """Forget the connection without QUIT: it is dead or in an unknown state."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _reset(self) -> None:
        """RSET after a refused transaction, so the next one starts clean."""
        if self._conn is None:
            return
        try:
            code, _ = self._conn.rset()
        except (smtplib.SMTPException, OSError):
            code = -1
        if code != 250:
            self._drop()


def _stuffed(data: bytes) -> bytes:
    """The DATA payload: dot-stuffed (RFC 5321 §4.5.2) and terminated.

    ``smtplib.SMTP.data`` re-scans every message twice with regular expressions
    (line endings, then dots), about a millisecond per 60 KB message.  Composed
    messages already have CRLF line endings and base64 bodies never start a line
    with a dot.
    """
    # Lines end in CRLF, so "\n." finds every line that starts with a dot (an HTML
    # part's <style> block has plenty); bytes.replace does it in C.
    if b"\n." in data:
        data = data.replace(b"\n.", b"\n..")
    if data.startswith(b"."):
        data = b"." + data
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"


def _decode(text: bytes | str) -> str:
    if isinstance(text, bytes):
        # Servers are supposed to answer in ASCII; replies with stray UTF-8 exist.
        text = text.decode("utf-8", errors="replace")
    return text


def _reply(code: int, text: bytes | str) -> str:
    # smtplib joins multi-line replies with "\n"; a log line wants one line.
    return f"{code} {' '.join(_decode(text).splitlines())}".strip()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, smtplib.SMTPResponseException):
        return _reply(exc.smtp_code, exc.smtp_error)
    return str(exc) or type(exc).__name__
