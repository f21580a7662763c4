"""A tiny SMTP sink in its own process, for the daemon tests.

    python tests/smtp_sink.py RECIPIENTS_FILE PORT_FILE [DELAY_SECONDS]

Accepts every message and appends each recipient to RECIPIENTS_FILE (one line
each) *before* answering 250 (DELAY_SECONDS later: a slow server), so a line means the server took the message even
if the client died before hearing the reply.  Writes its port to PORT_FILE once
it listens; stops on SIGTERM.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading

from aiosmtpd.controller import Controller


class _Sink:
    def __init__(self, path: str, delay: float = 0.0):
        self.fh = open(path, "a", encoding="utf-8")  # noqa: SIM115 - open for the process's life
        self.delay = delay

    async def handle_DATA(self, server, session, envelope):
        self.fh.write("".join(f"{rcpt}\n" for rcpt in envelope.rcpt_tos))
        self.fh.flush()
        if self.delay:
            await asyncio.sleep(self.delay)
        return "250 2.0.0 OK"


class _Controller(Controller):
    def _trigger_server(self):
        # With port 0 the OS chose the port; aiosmtpd's self-check needs the real one.
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


def main() -> None:
    out, port_file = sys.argv[1], sys.argv[2]
    delay = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
    controller = _Controller(_Sink(out, delay), hostname="127.0.0.1", port=0, ready_timeout=10)
    controller.start()
    tmp = port_file + ".tmp"
    with open(tmp, "w") as fh:
        fh.write(str(controller.port))
    os.replace(tmp, port_file)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    while not done.wait(0.5):
        pass
    controller.stop()


if __name__ == "__main__":
    main()
