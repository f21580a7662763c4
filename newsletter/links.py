"""Every URL a reader gets, the greeting, and the personal placeholders of a digest.

Rules this module keeps:

- A reader's URLs are built here and nowhere else: confirmation (sign-up),
  preferences, unsubscribe — which is also the RFC 8058 one-click POST
  target — and the archive.  Tokens come from :mod:`newsletter.tokens`, always
  signed with the *first* key of ``tokens.signing_keys(config)``; whoever
  verifies one (web/pages.py, bounces.py) accepts every key of that list, so
  links already sent keep working after a key rotation.
- Reading statistics (issue 15): a tracked article link is
  ``{base_url}/r/<link token>/<reader>`` and the open pixel
  ``{base_url}/o/<open token>/<reader>.gif``.  The link token names the
  edition, the link's index into :func:`tracked_links` of the frozen content
  and the variant (:func:`variant_code`), signed — never a URL, so there is no
  open redirect.  ``<reader>`` is the only per-message part, a placeholder
  like the others, filled by :func:`reader_token`: ``d<delivery id>`` under
  ``tracking = "per-subscriber"``, a random ``m<hex>`` under ``"aggregate"``
  (no row anywhere maps it to a person), with the compose time, signed.
- The personal parts of a digest (greeting, unsubscribe and preferences URL)
  are *placeholders* that :mod:`.editions.render` puts where the template asks
  for them.  Each carries a random nonce (:meth:`Placeholders.new`, from
  :mod:`secrets`, made for every render and never stored), so no article text,
  feed item or config string can contain one — whatever the text went
  through on the way (sanitiser, markdown, html2text, premailer, the
  ISO-2022-JP mapping, line wrapping: a placeholder is printable ASCII without
  spaces, which the wrapper never breaks).  Personal data therefore lands only
  where the template put it.  Text that merely *looks* like a placeholder
  (``%%NL_UNSUBSCRIBE_URL%%``) stays as written; preflight warns about it.
- :func:`fill` is the one substitution of placeholders (compose, the
  providers that fill in parts themselves, preflight, the archive, previews);
  :func:`split` is the rule it follows, for compose's byte-level copy.  HTTP
  services that substitute server-side (SendGrid ``substitutions``, Mailgun
  ``recipient-variables``) get their keys from :func:`server_key`, which keeps
  the nonce: an article cannot name those keys either.
"""

from __future__ import annotations

import html
import re
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import quote

from .sanitize import header_safe
from .tokens import make_expiring_token, make_fields_token, make_token, verify_fields_token

# What a placeholder looks like: %%NL_<NAME>_<16 hex digits>%%.
PLACEHOLDER = re.compile(r"%%NL_([A-Z]+(?:_[A-Z]+)*)_([0-9a-f]{16})%%")


@dataclass(frozen=True)
class Placeholders:
    """The markers of one render: ``%%NL_GREETING_<nonce>%%`` and so on."""

    nonce: str

    @classmethod
    def new(cls) -> Placeholders:
        return cls(secrets.token_hex(8))

    @property
    def greeting(self) -> str:
        return f"%%NL_GREETING_{self.nonce}%%"

    @property
    def unsubscribe(self) -> str:
        return f"%%NL_UNSUBSCRIBE_URL_{self.nonce}%%"

    @property
    def preferences(self) -> str:
        return f"%%NL_PREFERENCES_URL_{self.nonce}%%"

    @property
    def reader(self) -> str:
        """The per-message part of tracked links (see :func:`reader_token`)."""
        return f"%%NL_READER_{self.nonce}%%"

    def all(self) -> tuple[str, str, str]:
        """The markers of the template's personal parts (the reader's part of
        tracked links is :attr:`reader`, put in by render's tracking step)."""
        return self.greeting, self.unsubscribe, self.preferences

    def values(self, greeting_text: str, unsubscribe: str, preferences: str, reader: str = "-") -> dict[str, str]:
        """placeholder → value, as :func:`fill` and ``OutgoingMessage.personal`` take them."""
        return {self.greeting: greeting_text, self.unsubscribe: unsubscribe, self.preferences: preferences,
                self.reader: reader}


def split(template: str, placeholders: Iterable[str]) -> list[str]:
    """``template`` cut at the placeholders: text, placeholder, text, ... (odd
    indexes are placeholders; the text pieces may be empty)."""
    wanted = [p for p in placeholders if p in template]
    if not wanted:
        return [template]
    return re.split("(" + "|".join(re.escape(p) for p in wanted) + ")", template)


@lru_cache(maxsize=64)
def split_once(template: str, placeholders: tuple[str, ...]) -> tuple[str, ...]:
    """:func:`split`, remembered: every message of a variant fills the same template
    with the same placeholders, so it is cut once, not searched once a message."""
    return tuple(split(template, placeholders))


def fill(template: str, values: Mapping[str, str], *, escape: bool = False) -> str:
    """``template`` with each placeholder (a key of ``values``) replaced by its
    value, HTML-escaped when ``escape`` (for an HTML part).  One pass: a value
    is never searched for placeholders itself."""
    pieces = list(split_once(template, tuple(values)))
    for i in range(1, len(pieces), 2):
        value = values[pieces[i]]
        pieces[i] = html.escape(value) if escape else value
    return "".join(pieces)


def server_key(placeholder: str, *, escaped: bool = False) -> str:
    """The name a server-side substitution uses for ``placeholder``:
    ``%%NL_GREETING_<nonce>%%`` → ``nl_greeting_<nonce>`` (``…_html`` for the
    HTML-escaped value).  Letters, digits and ``_`` only, nonce kept."""
    name = placeholder.strip("%").lower()
    return name + "_html" if escaped else name


def server_template(template: str, placeholders: Iterable[str], reference: Callable[[str], str], *,
                    escaped: bool) -> str:
    """A part for a service that substitutes server-side: each placeholder
    becomes ``reference(server_key(placeholder, escaped=escaped))``
    (``%recipient.nl_greeting_<nonce>%`` for Mailgun ...)."""
    return fill(template, {p: reference(server_key(p, escaped=escaped)) for p in placeholders})


def server_values(personal: Mapping[str, str]) -> dict[str, str]:
    """One message's values under :func:`server_key` names: plain and HTML-escaped."""
    out: dict[str, str] = {}
    for placeholder, value in personal.items():
        out[server_key(placeholder)] = value
        out[server_key(placeholder, escaped=True)] = html.escape(value)
    return out


# --------------------------------------------------------------------------- URLs and the greeting


def unsubscribe_url(base_url: str, key: bytes, subscriber_id: int) -> str:
    """The reader's unsubscribe page, and the RFC 8058 one-click POST target.
    ``base_url`` ``""`` gives the path alone (links inside our own pages)."""
    return f"{base_url}/unsubscribe/{make_token(key, 'unsubscribe', subscriber_id)}"


def preferences_url(base_url: str, key: bytes, subscriber_id: int) -> str:
    return f"{base_url}/preferences/{make_token(key, 'preferences', subscriber_id)}"


def confirm_url(base_url: str, key: bytes, signup_id: int, expires: int) -> str:
    """The double opt-in link, good until ``expires`` (epoch seconds)."""
    return f"{base_url}/confirm/{make_expiring_token(key, 'confirm', signup_id, expires)}"


def archive_url(base_url: str, publication: str | None = None, number: int | None = None) -> str:
    """``/archive/``, a publication's list, or one edition."""
    path = "/archive/"
    if publication:
        path += f"{publication}/"
        if number is not None:
            path += f"{number}/"
    return base_url + path


def feed_url(base_url: str, publication: str | None = None) -> str:
    return archive_url(base_url, publication) + "feed.atom"


def list_unsubscribe(unsubscribe: str, mailto: str | None) -> str:
    """The List-Unsubscribe value (RFC 2369/8058): the one-click URL, then the
    mailto: whose subject carries the same signed token.  Folding between the
    two items is allowed; the URL itself is never folded."""
    value = f"<{unsubscribe}>"
    if mailto:
        subject = quote(f"unsubscribe {unsubscribe.rsplit('/', 1)[1]}")
        value += f",\r\n <mailto:{mailto}?subject={subject}>"
    return value


def greeting(name: str, language: str) -> str:
    """The digest's salutation for one reader (or for every reader, ``name`` empty)."""
    name = header_safe(name)
    if language == "en":
        return f"Dear {name}," if name else "Dear reader,"
    return f"{name} 様" if name else "読者の皆さま"


# --------------------------------------------------------------------------- tracked links (issue 15)

PARTS = {"h": "html", "t": "text"}


@dataclass(frozen=True)
class Tracking:
    """What a render needs to write tracked links for one edition."""

    base_url: str
    key: bytes
    edition_id: int


def _hrefs(fragment: str) -> list[str]:
    if not fragment or "<a" not in fragment.lower():
        return []
    import lxml.html

    root = lxml.html.fragment_fromstring(fragment, create_parent="div")
    return [(a.get("href") or "").strip() for a in root.iter("a")]


def tracked_links(content: Mapping) -> list[tuple[str, int | None]]:
    """The links of a frozen edition that may be tracked, as (URL, article id),
    in a fixed order: each article's URL then the links in its body, then the
    links in the lead and afterword texts.  A link token's index points into
    this list; a URL appears once (its first place)."""
    out: list[tuple[str, int | None]] = []
    seen: set[str] = set()

    def add(url: str, article_id: int | None) -> None:
        if url.lower().startswith(("http://", "https://")) and url not in seen:
            seen.add(url)
            out.append((url, article_id))

    for a in content.get("articles", ()):
        add(a.get("url") or "", a.get("id"))
        for href in _hrefs(a.get("body_html") or ""):
            add(href, a.get("id"))
    for key in ("lead_html", "afterword_html"):
        for href in _hrefs(content.get(key) or ""):
            add(href, None)
    return out


def variant_code(content: Mapping, fields: Iterable[str], part: str) -> str:
    """``h``/``t`` (the part a link is in) and the variant's fields as a bit mask
    over the edition's fields, in hex: ``h5``."""
    wanted = set(fields)
    mask = sum(1 << i for i, f in enumerate(content["fields"]) if f["slug"] in wanted)
    return f"{part}{mask:x}"


def decode_variant(content: Mapping, code: str) -> tuple[str, tuple[str, ...]] | None:
    """(part, fields) of a :func:`variant_code`; None when it does not fit the edition."""
    if len(code) < 2 or code[0] not in PARTS:
        return None
    try:
        mask = int(code[1:], 16)
    except ValueError:
        return None
    slugs = [f["slug"] for f in content["fields"]]
    if mask >> len(slugs):
        return None
    return PARTS[code[0]], tuple(s for i, s in enumerate(slugs) if mask >> i & 1)


def click_url(tracking: Tracking, index: int, variant: str, reader: str) -> str:
    token = make_fields_token(tracking.key, "click", str(tracking.edition_id), str(index), variant)
    return f"{tracking.base_url}/r/{token}/{reader}"


def open_url(tracking: Tracking, variant: str, reader: str) -> str:
    token = make_fields_token(tracking.key, "open", str(tracking.edition_id), variant)
    return f"{tracking.base_url}/o/{token}/{reader}.gif"


def read_click(keys: Iterable[bytes], token: str) -> tuple[int, int, str] | None:
    """(edition id, link index, variant code) of a genuine click token."""
    got = verify_fields_token(keys, "click", token, 3)
    if got is None or not (got[0].isdigit() and got[1].isdigit()):
        return None
    return int(got[0]), int(got[1]), got[2]


def read_open(keys: Iterable[bytes], token: str) -> tuple[int, str] | None:
    got = verify_fields_token(keys, "open", token, 2)
    if got is None or not got[0].isdigit():
        return None
    return int(got[0]), got[1]


def reader_token(key: bytes, mode: str, delivery_id: int, sent_epoch: int) -> str:
    """The per-message part of tracked links: ``d<delivery id>`` (per-subscriber)
    or a random ``m<hex>`` (aggregate), and when it was composed, signed.  Under
    ``off`` nothing is tracked and this is ``-``."""
    if mode == "per-subscriber":
        ident = f"d{delivery_id}"
    elif mode == "aggregate":
        ident = "m" + secrets.token_hex(8)
    else:
        return "-"
    return make_fields_token(key, "reader", ident, str(sent_epoch))


def read_reader(keys: Iterable[bytes], token: str) -> tuple[str, int] | None:
    """(reader, composed at in epoch seconds) of a genuine reader token."""
    got = verify_fields_token(keys, "reader", token, 2)
    if got is None or got[0][:1] not in ("d", "m") or not got[1].isdigit():
        return None
    return got[0], int(got[1])
