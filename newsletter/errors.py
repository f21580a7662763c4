"""The exception tree: every class here is raised somewhere, and this is all of it.

::

    NewsletterError
      InputError              bad user input; the message names file/line/key/address; CLI exit 1
      StoreError              the database is missing, too old or too new for this version; CLI exit 1
      TransportError          a mail service gave no answer (connection refused/reset, timeout);
                              ``status`` says what that means for the messages: transient or unknown
    ConfigError               config.toml (or a provider's configuration) is wrong; CLI exit 1

How a *message* fails is data, not an exception: a provider returns one
:class:`~newsletter.interfaces.SendResult` per message (accepted / transient /
permanent / unknown, ``bad_address``), and the engine records it.  Exceptions are
for what is not about one message:

- ``TransportError`` is raised by a provider's one I/O step (the HTTP providers'
  ``transmit``, the SMTP provider's connect and login) and caught inside the
  provider, which turns it into results for the messages concerned: it never
  crosses ``Provider.send``.
- ``ConfigError`` stops a run with every message still pending (a refused API key
  must not fail a whole list).  It is outside the ``NewsletterError`` root on
  purpose: code that catches ``NewsletterError`` to note a problem and carry on
  (preflight's render check) must never swallow a configuration mistake.

Anything else escaping the pipeline is a bug, and shows as a traceback.
"""

from __future__ import annotations

from typing import Literal


class NewsletterError(Exception):
    """Root of the errors the CLI reports as one line and exit code 1."""


class InputError(NewsletterError):
    """Bad user input. The message names the file, line, key or address."""


class StoreError(NewsletterError):
    """The database cannot be used as it is (not initialised, newer schema, ...)."""


class TransportError(NewsletterError):
    """A request to a mail service got no answer.  ``status`` is what that means for
    its messages: ``transient`` (the service never saw it: refused, reset, connect
    timeout) or ``unknown`` (it went out whole and the answer never came)."""

    def __init__(self, status: Literal["transient", "unknown"], reply: str):
        super().__init__(reply)
        self.status: Literal["transient", "unknown"] = status
        self.reply = reply


class ConfigError(Exception):
    """config.toml is invalid. Deliberately not a NewsletterError (see module doc)."""
