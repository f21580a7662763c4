"""What an editor sees before approving: one variant of an edition rendered with
sample personal parts, and a test message of it to one address.

Rules kept here (``edition preview``/``edition send --test-to`` and the console
call these):

- The rendering is the send's own (:class:`delivery.Variants`), so a preview
  shows what readers get; the personal parts are filled by :func:`links.fill`
  with a sample name and ``PREVIEW`` links, HTML-escaped in the HTML part.
- Nothing is written: no delivery row, no state change, no audit row.  A test
  message goes to the one address given and is reported, not recorded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..config import Config
from ..interfaces import SendResult
from ..links import fill, greeting
from ..store.tables import utcnow
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


def test_send(config: Config, content: Mapping[str, Any], when: datetime, row: Any, key: VariantKey,
              address: str, provider: Any = None) -> SendResult:
    """One message of variant ``key`` to ``address`` (already normalised), through
    ``provider`` (default: the configured one, opened and closed here)."""
    from ..delivery import Variants, sending_for
    from ..providers import open_provider
    from .compose import Recipient, compose

    # content["test"]: 【テスト】 in the subject and a banner in both parts (render.py).
    rendered = Variants(config, {**content, "test": True}, when).get(key)
    slug = content["publication"]["slug"]
    fake = row or type("E", (), {"id": 0, "publication": slug, "created_at": when})()
    message = compose(rendered, Recipient(0, 0, address, ""), sending_for(config, fake), charset=key.charset,
                      now=utcnow())
    own = provider is None
    provider = provider or open_provider(config)
    try:
        [result] = provider.send([message])
    finally:
        if own:
            provider.close()
    return result
