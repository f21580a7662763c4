"""A real SMTP server for tests, which can be told to misbehave.

Built on aiosmtpd: it listens on 127.0.0.1 (a free port by default) in its own
thread and records what it receives.  Tests program it to refuse an address,
answer DATA with an error, hang up at a chosen moment or close a connection
after N messages, the way real MTAs do, so that providers are tested against
a socket rather than a mock.  (The idea is GNU Mailman's ``testing/mta.py``.)
It can also hold a message's final reply until the test releases it (to act
while a delivery is in flight) and refuse connections with a 421 greeting.

Handler hooks run in the server's event-loop thread while the test reads from
its own thread, so all shared state is guarded by one lock and the public
collections are handed out as copies.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any, Literal

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

__all__ = ["Hold", "ReceivedMessage", "SMTPTestServer"]

Stage = Literal["rcpt", "data_before", "data_after"]
_STAGES = ("rcpt", "data_before", "data_after")


@dataclass(frozen=True)
class ReceivedMessage:
    """One message the server accepted (answered 2xx to DATA)."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    message: EmailMessage
    queue_id: str = ""
    mail_options: tuple[str, ...] = ()
    connection: int = 0          # 1 for the first client connection, 2 for the next...
    login: str | None = None     # the AUTH user, when the client authenticated


class SMTPTestServer:
    """A programmable SMTP server; see the module docstring.

    ``credentials`` (user -> password) turns on AUTH (PLAIN/LOGIN, allowed
    without TLS since this is a test) and makes it required.
    """

    def __init__(self, *, hostname: str = "127.0.0.1", port: int = 0,
                 credentials: Mapping[str, str] | None = None, pipelining: bool = True):
        self.pipelining = pipelining
        self._lock = threading.Lock()
        self._messages: list[ReceivedMessage] = []
        self._rcpt_replies: dict[str, str] = {}
        self._data_replies: dict[str, list[Any]] = {}   # address -> [reply, times left or None]
        self._drops: list[list[Any]] = []               # [stage, address, times left]
        self._stalls: list[list[Any]] = []              # [stage, address, seconds, times left]
        self._holds: list[Hold] = []
        self._refusals: list[Any] = []                  # [greeting reply, times left]
        self._close_after: int | None = None
        self._connections = 0
        self._quits = 0
        self._queue_ids = itertools.count(1)
        self._live: set[_ProgrammableSMTP] = set()
        self._credentials = dict(credentials or {})

        smtp_kwargs: dict[str, Any] = {}
        if credentials is not None:
            # AUTH being required is enforced in handle_MAIL: aiosmtpd's own
            # auth_required warns on every connection when TLS is not required.
            smtp_kwargs.update(auth_require_tls=False, authenticator=self._authenticate)
        self._controller = _Controller(self, _Handler(self), hostname=hostname, port=port,
                                       server_hostname="mta.test", ready_timeout=10, **smtp_kwargs)
        self._running = False

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        self._controller.start()
        self._running = True
        with self._lock:
            # aiosmtpd opens one connection of its own to check it is up.
            self._connections = 0

    def stop(self) -> None:
        if not self._running:
            return
        with self._lock:
            for held in self._holds:
                held.release()
        # Close client connections first: the loop is about to stop and would
        # otherwise leave their transports to the garbage collector.
        self.disconnect_clients()
        self._controller.stop()
        self._running = False

    def __enter__(self) -> SMTPTestServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def host(self) -> str:
        return self._controller.hostname

    @property
    def port(self) -> int:
        return self._controller.port

    # -- what happened -------------------------------------------------------

    @property
    def messages(self) -> list[ReceivedMessage]:
        with self._lock:
            return list(self._messages)

    @property
    def connections(self) -> int:
        """Client connections opened since start() or clear()."""
        with self._lock:
            return self._connections

    @property
    def quits(self) -> int:
        """QUIT commands received since start() or clear()."""
        with self._lock:
            return self._quits

    # -- programming it ------------------------------------------------------

    def reply_to_rcpt(self, address: str, reply: str) -> None:
        """Answer ``RCPT TO:<address>`` (any case) with ``reply``, e.g. "550 5.1.1 No such user"."""
        with self._lock:
            self._rcpt_replies[address.lower()] = reply

    def reply_to_data(self, address: str, reply: str, times: int | None = None) -> None:
        """Answer the end of DATA of a message to ``address`` with ``reply``
        (every time, or only the next ``times`` times).  A non-2xx reply means the
        message is not recorded."""
        with self._lock:
            self._data_replies[address.lower()] = [reply, times]

    def drop_connection_on(self, stage: Stage, address: str, times: int = 1) -> None:
        """Hang up without a reply: at ``RCPT TO:<address>`` ("rcpt"), at the DATA
        command of a message to it ("data_before"), or after its content has arrived
        but before the final reply ("data_after"; the message is not recorded)."""
        if stage not in _STAGES:
            raise ValueError(f"stage must be one of {_STAGES}, not {stage!r}")
        with self._lock:
            self._drops.append([stage, address.lower(), times])

    def stall_on(self, stage: Literal["rcpt", "data_after"], address: str, seconds: float, times: int = 1) -> None:
        """Say nothing for ``seconds`` at ``RCPT TO:<address>`` or after the content of
        a message to it has arrived (then carry on as usual: a message stalled after
        its content is still accepted — as a slow real server would)."""
        with self._lock:
            self._stalls.append([stage, address.lower(), seconds, times])

    def hold(self, address: str) -> Hold:
        """Say nothing after the content of the next message to ``address`` has arrived
        until the test calls ``release()`` on the returned handle (``reached`` is set
        while it waits); then answer as usual (``reply_to_data`` rules apply)."""
        held = Hold(address.lower())
        with self._lock:
            self._holds.append(held)
        return held

    def refuse_connections(self, n: int, reply: str = "421 4.7.0 mta.test Error: too many connections "
                                                       "from 127.0.0.1, try again later") -> None:
        """Greet the next ``n`` connections with ``reply`` instead of 220 and close them,
        as an MTA limiting connections per client does (Postfix's anvil)."""
        with self._lock:
            self._refusals.append([reply, n])

    def _take_refusal(self) -> str | None:
        with self._lock:
            for rule in self._refusals:
                if rule[1] > 0:
                    rule[1] -= 1
                    return rule[0]
        return None

    def _take_hold(self, addresses: Iterable[str]) -> Hold | None:
        wanted = {a.lower() for a in addresses}
        with self._lock:
            for held in self._holds:
                if held.address in wanted and not held.taken:
                    held.taken = True
                    return held
        return None

    def _take_stall(self, stage: str, addresses: Iterable[str]) -> float:
        wanted = {a.lower() for a in addresses}
        with self._lock:
            for rule in self._stalls:
                if rule[0] == stage and rule[1] in wanted and rule[3] > 0:
                    rule[3] -= 1
                    return rule[2]
        return 0.0

    def close_after(self, n_messages: int | None) -> None:
        """After ``n_messages`` accepted on one connection, answer the next MAIL
        with 421 and close it, like an MTA limiting messages per connection.
        ``None`` turns this off."""
        with self._lock:
            self._close_after = n_messages

    def disconnect_clients(self) -> None:
        """Close every client connection now, as an MTA does with idle ones."""
        if not self._running:
            return

        async def close_all() -> None:
            for protocol in list(self._live):
                protocol.hang_up_now()

        asyncio.run_coroutine_threadsafe(close_all(), self._controller.loop).result(timeout=5)

    def clear(self) -> None:
        """Forget received messages, counters and every programmed behaviour."""
        with self._lock:
            self._messages.clear()
            self._rcpt_replies.clear()
            self._data_replies.clear()
            self._drops.clear()
            self._stalls.clear()
            self._refusals.clear()
            for held in self._holds:
                held.release()
            self._holds.clear()
            self._close_after = None
            self._connections = 0
            self._quits = 0

    # -- used by the handler (event-loop thread) -----------------------------

    def _connection_opened(self, protocol: _ProgrammableSMTP) -> int:
        with self._lock:
            self._connections += 1
            self._live.add(protocol)
            return self._connections

    def _connection_closed(self, protocol: _ProgrammableSMTP) -> None:
        with self._lock:
            self._live.discard(protocol)

    def _quit(self) -> None:
        with self._lock:
            self._quits += 1

    def _take_drop(self, stage: Stage, addresses: Iterable[str]) -> bool:
        wanted = {a.lower() for a in addresses}
        with self._lock:
            for rule in self._drops:
                if rule[0] == stage and rule[1] in wanted and rule[2] > 0:
                    rule[2] -= 1
                    return True
        return False

    def _rcpt_reply(self, address: str) -> str | None:
        with self._lock:
            return self._rcpt_replies.get(address.lower())

    def _data_reply(self, addresses: Iterable[str]) -> str | None:
        with self._lock:
            for address in addresses:
                rule = self._data_replies.get(address.lower())
                if rule is None:
                    continue
                reply, times = rule
                if times is None:
                    return reply
                if times > 0:
                    rule[1] -= 1
                    return reply
        return None

    def _must_close(self, delivered_on_connection: int) -> bool:
        with self._lock:
            return self._close_after is not None and delivered_on_connection >= self._close_after

    def _record(self, message: ReceivedMessage) -> None:
        with self._lock:
            self._messages.append(message)

    def _next_queue_id(self) -> str:
        with self._lock:
            return f"TQ{next(self._queue_ids):06d}"

    def _authenticate(self, server: SMTP, session: Any, envelope: Any, mechanism: str,
                      auth_data: Any) -> AuthResult:
        if isinstance(auth_data, LoginPassword):
            user = auth_data.login.decode("utf-8", "replace")
            password = auth_data.password.decode("utf-8", "replace")
            if user in self._credentials and self._credentials[user] == password:
                return AuthResult(success=True, auth_data=user)
        return AuthResult(success=False, handled=False)


class Hold:
    """A message held after its content (see :meth:`SMTPTestServer.hold`)."""

    def __init__(self, address: str):
        self.address = address
        self.taken = False
        self.reached = threading.Event()
        self._released = threading.Event()

    def release(self) -> None:
        self._released.set()

    async def wait(self, limit: float = 30.0) -> None:
        self.reached.set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        while not self._released.is_set() and loop.time() < deadline:
            await asyncio.sleep(0.01)


class _ProgrammableSMTP(SMTP):
    """aiosmtpd's SMTP session plus the ability to hang up at a chosen moment."""

    def __init__(self, owner: SMTPTestServer, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.owner = owner
        self.number = 0
        self.delivered = 0
        self._hang_up: Literal["silent", "after_reply"] | None = None
        self._greeted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self.transport is None
        super().connection_made(transport)
        if first:  # not again after STARTTLS, which calls this a second time
            self.number = self.owner._connection_opened(self)

    def connection_lost(self, error: Exception | None) -> None:
        self.owner._connection_closed(self)
        super().connection_lost(error)

    def hang_up(self, *, after_reply: bool = False) -> None:
        """Close instead of sending the next reply (or right after sending it)."""
        self._hang_up = "after_reply" if after_reply else "silent"

    def hang_up_now(self) -> None:
        if self.transport is not None:
            self.transport.close()

    async def push(self, status: Any) -> None:
        if not self._greeted:
            self._greeted = True
            refusal = self.owner._take_refusal()
            if refusal is not None:
                status = refusal
                self._hang_up = "after_reply"
        if self._hang_up == "silent":
            self.hang_up_now()
            return
        await super().push(status)
        if self._hang_up == "after_reply":
            self.hang_up_now()

    async def smtp_DATA(self, arg: str) -> None:
        # aiosmtpd has no hook between the DATA command and its 354 reply.
        if self.envelope is not None and self.envelope.rcpt_tos:
            if self.owner._take_drop("data_before", self.envelope.rcpt_tos):
                self.hang_up()
        await super().smtp_DATA(arg)


class _Handler:
    def __init__(self, owner: SMTPTestServer):
        self.owner = owner

    async def handle_MAIL(self, server: _ProgrammableSMTP, session: Any, envelope: Any,
                          address: str, mail_options: list[str]) -> str:
        if self.owner._credentials and not session.authenticated:
            return "530 5.7.0 Authentication required"
        if self.owner._must_close(server.delivered):
            server.hang_up(after_reply=True)
            return "421 4.7.0 mta.test Too many messages on this connection, closing"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server: _ProgrammableSMTP, session: Any, envelope: Any,
                          address: str, rcpt_options: list[str]) -> str:
        stall = self.owner._take_stall("rcpt", [address])
        if stall:
            await asyncio.sleep(stall)
        if self.owner._take_drop("rcpt", [address]):
            server.hang_up()
            return "250 OK (never sent)"
        reply = self.owner._rcpt_reply(address)
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server: _ProgrammableSMTP, session: Any, envelope: Any) -> str:
        stall = self.owner._take_stall("data_after", envelope.rcpt_tos)
        if stall:
            await asyncio.sleep(stall)
        held = self.owner._take_hold(envelope.rcpt_tos)
        if held is not None:
            await held.wait()
        if self.owner._take_drop("data_after", envelope.rcpt_tos):
            server.hang_up()
            return "250 OK (never sent)"
        reply = self.owner._data_reply(envelope.rcpt_tos)
        if reply is not None and not reply.startswith("2"):
            return reply
        qid = self.owner._next_queue_id()
        data = bytes(envelope.original_content)
        self.owner._record(ReceivedMessage(
            mail_from=envelope.mail_from,
            rcpt_tos=tuple(envelope.rcpt_tos),
            data=data,
            message=BytesParser(policy=policy.default).parsebytes(data),  # type: ignore[arg-type]
            queue_id=qid,
            mail_options=tuple(envelope.mail_options),
            connection=server.number,
            login=session.auth_data if session.authenticated else None,
        ))
        server.delivered += 1
        return reply or f"250 2.0.0 Ok: queued as {qid}"

    async def handle_EHLO(self, server: _ProgrammableSMTP, session: Any, envelope: Any, hostname: str,
                          responses: list[str]) -> list[str]:
        session.host_name = hostname
        if self.owner.pipelining:
            # Real MTAs announce RFC 2920 pipelining; aiosmtpd handles pipelined
            # commands (it reads line by line) but does not say so.
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_QUIT(self, server: _ProgrammableSMTP, session: Any, envelope: Any) -> str:
        self.owner._quit()
        return "221 2.0.0 Bye"


class _Controller(Controller):
    def __init__(self, owner: SMTPTestServer, handler: _Handler, **kwargs: Any):
        super().__init__(handler, **kwargs)
        self.owner = owner

    def factory(self) -> _ProgrammableSMTP:
        return _ProgrammableSMTP(self.owner, self.handler, **self.SMTP_kwargs)

    def _trigger_server(self) -> None:
        # With port 0 the OS chose the port; aiosmtpd's self-check connects to
        # self.port, so learn the real one first.
        assert self.server is not None
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()
