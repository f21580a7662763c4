"""What an editor sees before approving: one variant of an edition rendered with
sample personal parts (the test message of it is :func:`newsletter.publish.send_test`).

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
