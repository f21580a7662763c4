"""The exception tree.

::

    NewsletterError
      InputError              bad user input; the message names file/line/key/address; CLI exit 1
      StoreError              the database is missing, too old or too new for this version; CLI exit 1
      DeliveryError           something went wrong talking to a mail service
        TransientDelivery     SMTP 4xx (and 552), socket errors, timeouts, HTTP 429/5xx -> retry later
        PermanentDelivery     SMTP 5xx, HTTP 4xx -> failed
    ConfigError               config.toml is wrong; CLI exit 1

``ConfigError`` is outside the ``NewsletterError`` root on purpose: delivery code
catches ``NewsletterError``/``DeliveryError`` to record a failed message and carry
on, and a configuration mistake must never be swallowed that way.
"""

from __future__ import annotations


class NewsletterError(Exception):
    """Root of the errors the CLI reports as one line and exit code 1."""


class InputError(NewsletterError):
    """Bad user input. The message names the file, line, key or address."""


class StoreError(NewsletterError):
    """The database cannot be used as it is (not initialised, newer schema, ...)."""


class DeliveryError(NewsletterError):
    """A provider could not hand a message over."""

    def __init__(self, message: str, *, reply: str = "", retry_after: float | None = None):
        super().__init__(message)
        self.reply = reply or message
        self.retry_after = retry_after


class TransientDelivery(DeliveryError):
    """Try again later: 4xx, timeouts, dropped connections, HTTP 429/5xx."""


class PermanentDelivery(DeliveryError):
    """Do not try again: 5xx, HTTP 4xx."""


class ConfigError(Exception):
    """config.toml is invalid. Deliberately not a NewsletterError (see module doc)."""
