"""Which articles go into an edition, and which of them each variant carries.

An edition's content is frozen as a plain JSON-able dict at creation: titles,
summaries, sanitized bodies and field names as they were, so that a resend, the
archive or an audit shows exactly what went out whatever happens to the
articles (or the config's field names) later.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..config import Config, Publication
from ..sanitize import body_html


def order_key(article: Mapping[str, Any]):
    """Pinned first, then higher priority, then newest (embargo time, else creation)."""
    when = article.get("publish_at") or article["created_at"]
    return (not article["pinned"], -article["priority"], -when.timestamp(), -article["id"])


def select_articles(candidates: Iterable[Mapping[str, Any]], limit: int) -> list[Mapping[str, Any]]:
    return sorted(candidates, key=order_key)[:limit]


def freeze(
    config: Config, pub: Publication, number: int, articles: Sequence[Mapping[str, Any]], now: datetime
) -> dict[str, Any]:
    """The edition's content as it will be sent (JSON-able)."""
    pub_fields = set(pub.fields)
    return {
        "version": 1,
        "publication": {"slug": pub.slug, "title": pub.title},
        "number": number,
        "created_at": now.astimezone(UTC).isoformat(),
        "timezone": pub.timezone,
        "language": pub.language,
        "full_text": pub.full_text,
        "text_width": pub.text_width,
        "site": {"name": config.site.name, "base_url": config.site.base_url},
        "sender": {
            "name": config.sender.name,
            "address": config.sender.address,
            "postal_address": config.sender.postal_address,
            "contact": config.sender.contact,
        },
        "fields": [{"slug": f.slug, "name": f.name} for f in config.fields if f.slug in pub_fields],
        "notice": dict(pub.notice) or None,  # the publication's お知らせ; `edition set --notice-file` replaces it
        "articles": [
            {
                "id": a["id"],
                "title": a["title"],
                "url": a["url"],
                "summary": a["summary"],
                "body_html": body_html(a["body"], a["body_format"]) if pub.full_text else "",
                "author": a["author"],
                "fields": [f for f in a["fields"].split(",") if f in pub_fields],
                "image": {"url": a["image_url"], "alt": a.get("image_alt") or ""}
                if a.get("image_url") else None,
            }
            for a in articles
        ],
    }


@dataclass(frozen=True)
class VariantKey:
    """What makes two subscribers' mails identical but for the personal parts."""

    fields: tuple[str, ...]
    format: str
    charset: str

    def encode(self) -> str:
        return f"{','.join(self.fields)}|{self.format}|{self.charset}"

    @classmethod
    def decode(cls, text: str) -> VariantKey:
        fields, fmt, charset = text.split("|")
        return cls(tuple(f for f in fields.split(",") if f), fmt, charset)


def variant_fields(content: Mapping[str, Any], subscriber_fields: Iterable[str]) -> tuple[str, ...]:
    """The subscriber's fields that this edition has something in (in config order)."""
    mine = set(subscriber_fields)
    present = {f for a in content["articles"] for f in a["fields"]}
    return tuple(f["slug"] for f in content["fields"] if f["slug"] in mine and f["slug"] in present)


def sections(content: Mapping[str, Any], fields: Sequence[str]) -> list[dict[str, Any]]:
    """The digest for one set of fields: a section per field in config order.

    An article in several of the reader's fields appears once, in the first of
    them (config order), and its card shows all its field labels.
    """
    names = {f["slug"]: f["name"] for f in content["fields"]}
    wanted = [f for f in (x["slug"] for x in content["fields"]) if f in set(fields)]
    out: list[dict[str, Any]] = []
    placed: set[int] = set()
    for slug in wanted:
        items = []
        for a in content["articles"]:
            if slug in a["fields"] and a["id"] not in placed:
                placed.add(a["id"])
                items.append({**a, "field_names": [names[f] for f in names if f in a["fields"]]})  # config order
        if items:
            out.append({"field": {"slug": slug, "name": names[slug]}, "articles": items})
    return out
