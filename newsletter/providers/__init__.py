"""Finding and configuring providers.

A provider is a class registered under the entry-point group
``newsletter.providers``; ours are registered there too, so a third-party
package adds a service the same way we do.  :func:`load_provider` turns the
``[provider]`` table of ``config.toml`` into a ready instance.

:class:`OptionReader` (defined in :mod:`newsletter.config`, the one reader of
every TOML table) is how every provider reads its options, so that all of them
report mistakes the same way (``provider.<key>: ...``, ``fail(key, message)``),
read timeouts with ``duration()``/``number()`` (finite, bounded) and refuse keys
they do not know.

:func:`open_provider` builds the configured provider for a command or the
daemon: building one validates every option and reads its secrets from the
environment, and sends nothing — so ``newsletter run``, ``demo`` and ``edition
send`` call it *before* anything starts or is created, and a typo (``kind =
"smpt"``) or a missing password variable is one line naming the file and key.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

from newsletter.config import OptionReader
from newsletter.errors import ConfigError
from newsletter.interfaces import Provider

__all__ = ["ENTRY_POINT_GROUP", "OptionReader", "check_provider", "load_provider", "open_provider"]

ENTRY_POINT_GROUP = "newsletter.providers"

# Used only when the package metadata is absent (running from a source tree that
# was never installed); an installed package always goes through entry points so
# that a plug-in may replace one of ours.
_BUILTIN: dict[str, str] = {
    "file": "newsletter.providers.file:FileProvider",
    "smtp": "newsletter.providers.smtp:SMTPProvider",
    "sendgrid": "newsletter.providers.sendgrid:SendGridProvider",
    "mailgun": "newsletter.providers.mailgun:MailgunProvider",
    "postmark": "newsletter.providers.postmark:PostmarkProvider",
    "ses": "newsletter.providers.ses:SESProvider",
}

# max_batch is left out on purpose: it is often set per instance from the options,
# so it is checked on the built object instead.
_CLASS_MEMBERS = ("name", "from_config", "send", "close")
_METHODS = ("from_config", "send", "close")


def load_provider(kind: str, options: Mapping[str, Any], base_dir: Path) -> Provider:
    """Build the provider called ``kind`` from its options (the ``[provider]`` table
    without ``kind``).  Raises ConfigError for an unknown kind, a class that is not a
    provider, or options the provider refuses."""
    registered = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    if kind in registered:
        cls = _load_entry_point(kind, registered[kind])
    elif kind in _BUILTIN:
        cls = _load_reference(kind, _BUILTIN[kind])
    else:
        known = ", ".join(sorted(set(registered) | set(_BUILTIN)))
        raise ConfigError(f"provider.kind: unknown provider '{kind}' (known: {known})")

    if not isinstance(cls, type) or not _looks_like_provider(cls):
        raise ConfigError(f"provider.kind: '{kind}' does not implement the Provider interface")

    # from_config gets the table without "kind" by contract; tolerate callers that
    # pass the whole table rather than make every provider special-case it.
    options = {k: v for k, v in options.items() if k != "kind"}
    provider = cls.from_config(options, Path(base_dir))
    if not isinstance(provider, Provider):
        raise ConfigError(f"provider.kind: '{kind}' does not implement the Provider interface")
    return provider


def open_provider(config) -> Provider:
    """The provider ``config`` (a :class:`newsletter.config.Config`) names, ready to
    send: ``[provider]`` loaded, and wrapped with the DKIM signer when ``[dkim]`` is
    set and the provider sends our own bytes.  Every sender opens its provider
    here (the caller closes it).  A ConfigError names the config file and the key."""
    from newsletter.dkim_signer import signer_from_settings, wrap

    prefix = f"{config.path.name}: "
    try:
        provider = load_provider(config.provider.kind, config.provider.options, config.base_dir)
        try:
            return wrap(provider, signer_from_settings(config.dkim, config.base_dir))
        except BaseException:
            provider.close()
            raise
    except ConfigError as exc:
        message = str(exc)
        raise ConfigError(message if message.startswith(prefix) else prefix + message) from None


def check_provider(config) -> None:
    """Raise ConfigError (file and key) unless the configured provider can be built."""
    open_provider(config).close()


def _looks_like_provider(cls: type) -> bool:
    return all(hasattr(cls, m) for m in _CLASS_MEMBERS) and all(callable(getattr(cls, m)) for m in _METHODS)


def _load_entry_point(kind: str, ep: EntryPoint) -> object:
    try:
        return ep.load()
    except Exception as exc:  # a broken plug-in must read as a config problem, not a crash
        raise ConfigError(f"provider.kind: cannot load provider '{kind}' ({ep.value}): {exc}") from exc


def _load_reference(kind: str, reference: str) -> object:
    module_name, _, attr = reference.partition(":")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"provider.kind: cannot load provider '{kind}' ({reference}): {exc}") from exc
