"""What an editor sees before approving: one variant of an edition rendered with
sample personal parts (the test message of it is :func:`send_test`).

Rules kept here (``edition preview``/``edition send --test-to`` and the console
call these):

- The rendering is the send's own (:class:`delivery.Variants`), so a preview
  shows what readers get; the personal parts are filled by :func:`links.fill`
  with a sample name and ``PREVIEW`` links, HTML-escaped in the HTML part.
- Nothing is written: no delivery row, no state change, no audit row.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..config import Config
from ..links import fill, greeting
from .assemble import VariantKey
from .render import Rendered


@dataclass(frozen=True)
class Sample:
    rendered: Rendered
    subject: str
    html: str | None  # None for a text-only variant
    text: str


def sample(config: Config, content: Mapping[str, Any], when: datetime, key: VariantKey) -> Sample:
    from ..delivery import Variants

    rendered = Variants(config, content, when).get(key)
    base = config.site.base_url
    name = "山田 太郎" if content["language"] == "ja" else "Taro Yamada"
    values = rendered.placeholders.values(greeting(name, content["language"]), f"{base}/unsubscribe/PREVIEW",
                                          f"{base}/preferences/PREVIEW")
    html = fill(rendered.html, values, escape=True) if rendered.html else None
    return Sample(rendered, rendered.subject, html, fill(rendered.text, values))


def send_test(config: Config, content: Mapping[str, Any], when: datetime, key: VariantKey, address: str, *,
              edition=None, opener=None):
    """One mail of ``content`` as variant ``key`` to ``address`` (``edition --test-to``):
    nothing is logged and nothing changes.  ``edition``: its row when it exists (else
    id 0, created ``when``).  Opens its provider (``opener``, default the config's)
    and closes it; returns the provider's :class:`SendResult`."""
    from ..delivery import Variants, sending
    from ..providers import open_provider
    from ..store.tables import utcnow
    from .compose import Recipient, compose

    # content["test"]: 【テスト】 in the subject and a banner in both parts (render.py).
    rendered = Variants(config, {**content, "test": True}, when).get(key)
    slug = content["publication"]["slug"]
    shared = sending(config, slug, edition.id if edition is not None else 0,
                     edition.created_at if edition is not None else when)
    message = compose(rendered, Recipient(0, 0, address, ""), shared, charset=key.charset, now=utcnow())
    provider = (opener or (lambda: open_provider(config)))()
    try:
        [result] = provider.send([message])
    finally:
        provider.close()
    return result
