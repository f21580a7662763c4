"""The subscriber web service (``newsletter serve``): sign-up with double
opt-in, the preference center, one-click unsubscribe, the public archive and
the mail services' bounce/complaint webhooks.  See :mod:`.app` for the routes."""

from .app import create_app

__all__ = ["create_app"]
