"""Japanese text for mail: display width, line wrapping with kinsoku, and the
mapping that makes text fit ISO-2022-JP (JIS X 0208).

Display width
    East Asian Width: W (wide) and F (fullwidth) take 2 columns, and so do the
    A (ambiguous) characters — ○ ※ ① → … — because Japanese fonts draw them
    full-width (``ambiguous=1`` for English text).  Combining marks,
    variation selectors and other format characters take none; an emoji
    sequence (ZWJ, skin tone, VS16) is one glyph of 2 columns.

Wrapping (:func:`wrap`)
    Each line of the input is a paragraph (html2text's output with
    ``body_width=0``).  It is cut into *atoms*: pieces that must stay on one
    line.  Between two atoms a line may break; a break is *preferred* after a
    space and at a phrase boundary found by BudouX (Google's phrase
    segmenter; its Japanese model ships inside the PyPI package, so nothing
    is downloaded).  Lines are filled greedily and end at the last preferred
    break when that keeps the line at least two-thirds full, else at the last
    legal one — "between any two characters", kinsoku permitting.  Never
    broken: a run of ASCII non-space characters (a word, a number, a URL,
    a ``%%PLACEHOLDER%%``), a run of full-width digits/letters, a character
    and its combining marks.  An atom wider than the line (a long URL) stands
    alone on its line.  Spaces stay at the end of the line they follow, so no
    character is lost or added: removing the inserted line breaks (and the
    continuation indent) gives the input back.  A list item (``- `` ``* ``
    ``1. `` ``・`` ``①`` ``（1）`` ``■`` ``◆`` ``※`` …) continues under its text,
    a quotation (``> ``) repeats its marker.

Kinsoku shori (禁則処理)
    :data:`NO_START` may not begin a line and :data:`NO_END` may not end one
    (classes of the W3C *Requirements for Japanese Text Layout* / JIS X 4051,
    listed below); :data:`INSEPARABLE` pairs (―― ……) are not split.  The rule
    is applied by gluing — the closing mark moves to the next line together
    with the character before it (追い出し), never by letting a line run long
    (only a glued piece wider than a whole line, like a long URL, does).

ISO-2022-JP (:func:`map_for_jis`)
    A character that the ``iso2022_jp`` codec (JIS X 0208 + ASCII + JIS X
    0201-Roman) cannot carry is replaced, in this order:

    1. :data:`EQUIVALENTS` — the same character at another code point:
       CP932's ～ － ∥ ￠ ￡ ￢ and — for JIS's 〜 − ‖ ¢ £ ¬ ―, NBSP and the other
       typographic spaces → space, half-width katakana → full-width (ｶﾞ →
       ガ, by NFKC over the whole run so the voiced mark combines), and NFC:
       decomposed kana from macOS (か + U+3099 → が), CJK compatibility
       ideographs with a canonical form (塚 U+FA10 → 塚).
    2. :data:`SUBSTITUTES` — machine-dependent characters (機種依存文字) and
       typography with a conventional ASCII/JIS spelling: ① → (1), ㊤ → (上),
       〝〟 → “”, bullets → ・, © → (C), € → EUR, ✔ → ○, ➡ → → …
    3. emoji and pictographs → removed (with their ZWJ/VS16/skin-tone parts);
       zero-width and control characters that would break the JIS escape
       state (ESC, SO, SI) → removed.
    4. NFKC, when its result fits: ㈱ → (株), ㍻ → 平成, Ⅳ → IV, ㎡ → m2,
       ™ → TM, ℡ → TEL, ㍉ → ミリ, ⑴ → (1), µ → μ …
    5. Latin letters lose their diacritics (café → cafe, ß → ss).

    Names (a subscriber's display name) get step 1 only: a person's name is
    not rewritten — ① or an emoji or 髙 in a name makes that one message go
    out in UTF-8 instead.  Whatever remains unmappable (髙 﨑 𠮷, Hangul …)
    is left in place: :func:`unmappable` lists it, and compose sends that
    message as UTF-8.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

DEFAULT_WIDTH = 70
MIN_WIDTH = 30
JIS_CODEC = "iso2022_jp"

# --------------------------------------------------------------------------- kinsoku tables
# Classes from W3C JLReq (https://www.w3.org/TR/jlreq/ appendix A) / JIS X 4051.

#: Characters that may not begin a line (行頭禁則).
NO_START = frozenset(
    "）〕］｝〉》」』】〙〗〟’”｠»)]}｣"  # closing brackets and quotes (cl-02), ASCII and half-width too
    "‐゠–〜～"  # hyphens (cl-03)
    "？！‼⁇⁈⁉?!"  # dividing punctuation (cl-04)
    "・：；:;･"  # middle dots (cl-05)
    "。．.｡"  # full stops (cl-06)
    "、，,､"  # commas (cl-07)
    "…‥〳〴〵"  # inseparable characters (cl-08): never at the start of a line either
    "ヽヾゝゞ々〻"  # iteration marks (cl-09)
    "ーｰ"  # prolonged sound mark (cl-10)
    "ぁぃぅぇぉっゃゅょゎゕゖァィゥェォッャュョヮヵヶㇰㇱㇲㇳㇴㇵㇶㇷㇸㇹㇺㇻㇼㇽㇾㇿｧｨｩｪｫｬｭｮｯ"  # small kana (cl-11)
    "゛゜ﾞﾟ"  # (semi-)voiced sound marks
    "％‰℃°′″%"  # postfixed units (cl-20): 50％ stays together
)

#: Characters that may not end a line (行末禁則).
NO_END = frozenset(
    "（〔［｛〈《「『【〘〖〝‘“｟«([{｢"  # opening brackets and quotes (cl-01)
    "￥＄￡¥€"  # prefixed currency (cl-19): ￥1,000 stays together
)

#: Pairs of these are not split (JLReq cl-08): ―― ……
INSEPARABLE = frozenset("―—…‥")

# No break on either side of these (no-break spaces, word joiner).
_GLUE = frozenset("\u00a0\u202f\u2060\ufeff")
# A break is allowed (and preferred) after these; they never begin a line.
_SPACES = frozenset(" \t\u3000\u200b")

_CJK = re.compile(r"[\u3000-\u30ff\u3400-\u9fff\uf900-\ufaff\uff00-\uffef\U00020000-\U0003ffff]")


# --------------------------------------------------------------------------- display width


def _is_extender(c: str) -> bool:
    """A character drawn as part of the one before it."""
    o = ord(c)
    return (
        0xFE00 <= o <= 0xFE0F  # variation selectors
        or o == 0x200D  # zero-width joiner
        or o == 0x20E3  # combining enclosing keycap
        or 0x1F3FB <= o <= 0x1F3FF  # skin tones
        or 0xE0020 <= o <= 0xE007F  # tags
        or 0xE0100 <= o <= 0xE01EF  # variation selectors supplement
        or unicodedata.combining(c) != 0
        or unicodedata.category(c) in ("Mn", "Me")
    )


@lru_cache(maxsize=8192)
def _char_width(c: str, ambiguous: int) -> int:
    o = ord(c)
    if 0x20 <= o < 0x7F or c == "\t":
        return 1
    if o < 0x20 or 0x7F <= o < 0xA0 or _is_extender(c) or unicodedata.category(c) == "Cf":
        return 0
    eaw = unicodedata.east_asian_width(c)
    if eaw in ("W", "F"):
        return 2
    return ambiguous if eaw == "A" else 1


def clusters(text: str) -> list[str]:
    """Characters as the reader sees them: a base with its combining marks,
    variation selectors and ZWJ-joined emoji."""
    out: list[str] = []
    join_next = False
    for c in text:
        if out and (join_next or _is_extender(c)):
            out[-1] += c
        else:
            out.append(c)
        join_next = c == "\u200d"
    return out


def _cluster_width(cluster: str, ambiguous: int) -> int:
    width = _char_width(cluster[0], ambiguous)
    if len(cluster) > 1 and ("\ufe0f" in cluster or "\u200d" in cluster or "\u20e3" in cluster):
        return 2  # an emoji presentation
    return width


def display_width(text: str, ambiguous: int = 2) -> int:
    """Columns ``text`` takes in a monospaced Japanese font (one line)."""
    if text.isascii():
        return sum(1 for c in text if " " <= c <= "~" or c == "\t")
    return sum(_cluster_width(c, ambiguous) for c in clusters(text))


# --------------------------------------------------------------------------- wrapping

_PREFIX = re.compile(
    r"(?P<lead>[ \t]*(?:>[ \t]?)*)"
    r"(?P<marker>(?:[-*+]|\d{1,3}[.)])[ ]+"
    r"|(?:[・•※■□◆◇●○◎▼▽★☆]|[①-⑳]|[（(]\d{1,3}[)）])[ \u3000]?)?"
)


@lru_cache(maxsize=1)
def _phrase_parser():
    import budoux

    return budoux.load_default_japanese_parser()


def phrases(text: str) -> list[str]:
    """BudouX's phrases of ``text`` (lossless: they join back to ``text``)."""
    return _phrase_parser().parse(text) if text else []


def split_prefix(line: str, ambiguous: int = 2) -> tuple[str, str, str]:
    """(first-line prefix, continuation prefix, content) of one paragraph.

    The prefix is the leading indent, quote markers and list marker; a
    continuation line repeats the indent and quote markers and puts spaces
    under the list marker.  (A leading U+3000 is a paragraph indent, 字下げ:
    it belongs to the first line only, so it is content.)"""
    m = _PREFIX.match(line)
    lead, marker = m.group("lead"), m.group("marker") or ""
    return lead + marker, lead + " " * display_width(marker, ambiguous), line[m.end():]


def _is_ascii_word(c: str) -> bool:
    return "!" <= c <= "~"


def _is_fw_alnum(c: str) -> bool:
    return "０" <= c <= "９" or "Ａ" <= c <= "Ｚ" or "ａ" <= c <= "ｚ"


def _can_break(a: str, b: str, visible: str | None) -> bool:
    """May a line end after cluster ``a`` and the next begin with ``b``?
    ``visible`` is the last non-space cluster up to ``a`` (None: only spaces so far)."""
    a0, b0 = a[0], b[0]
    if visible is None or b0 in _SPACES or b0 in NO_START or b0 in _GLUE or a0 in _GLUE:
        return False
    if visible[0] in NO_END:
        return False
    if a0 in _SPACES:
        return True
    if _is_ascii_word(a0) and _is_ascii_word(b0):
        return False  # inside an ASCII word or URL
    if _is_fw_alnum(a0) and _is_fw_alnum(b0):
        return False
    return not (a0 == b0 and a0 in INSEPARABLE)


@dataclass(frozen=True)
class _Atom:
    text: str
    width: int
    preferred: bool  # a preferred break follows


def _atoms(content: str, ambiguous: int) -> list[_Atom]:
    cl = clusters(content)
    if not cl:
        return []
    preferred: set[int] = set()  # string offsets where a phrase begins
    if _CJK.search(content):
        offset = 0
        for chunk in phrases(content)[:-1]:
            offset += len(chunk)
            preferred.add(offset)
    atoms: list[_Atom] = []
    current, width = cl[0], _cluster_width(cl[0], ambiguous)
    visible = None if cl[0][0] in _SPACES else cl[0]
    offset = len(cl[0])
    for prev, c in zip(cl, cl[1:], strict=False):
        if _can_break(prev, c, visible):
            atoms.append(_Atom(current, width, prev[0] in _SPACES or offset in preferred))
            current, width = c, _cluster_width(c, ambiguous)
        else:
            current += c
            width += _cluster_width(c, ambiguous)
        if c[0] not in _SPACES:
            visible = c
        offset += len(c)
    atoms.append(_Atom(current, width, False))
    return atoms


def wrap_line(line: str, width: int = DEFAULT_WIDTH, *, ambiguous: int = 2) -> list[str]:
    """One paragraph → its lines, each at most ``width`` columns unless it is a
    single unbreakable atom wider than that (a long URL)."""
    if display_width(line, ambiguous) <= width:
        return [line]
    first, cont, content = split_prefix(line, ambiguous)
    if display_width(cont, ambiguous) > width // 2:
        cont = ""
    atoms = _atoms(content, ambiguous)
    lines: list[str] = []
    prefix, i, n = first, 0, len(atoms)
    while i < n:
        avail = width - display_width(prefix, ambiguous)
        used, j, phrase_end = 0, i, None
        while j < n and used + atoms[j].width <= avail:
            used += atoms[j].width
            j += 1
            if atoms[j - 1].preferred:
                phrase_end = (j, used)
        if j < n:
            if j == i:
                j = i + 1  # wider than the line on its own: alone
            elif phrase_end is not None and phrase_end[1] * 3 >= avail * 2:
                j = phrase_end[0]
        lines.append(prefix + "".join(a.text for a in atoms[i:j]))
        prefix, i = cont, j
    return lines or [line]


def wrap(text: str, width: int = DEFAULT_WIDTH, *, ambiguous: int = 2) -> str:
    """Wrap every line of ``text`` to ``width`` display columns (see the module doc)."""
    return "\n".join(out for line in text.split("\n") for out in wrap_line(line, width, ambiguous=ambiguous))


# --------------------------------------------------------------------------- ISO-2022-JP

#: Same character, other code point (safe everywhere, display names included).
EQUIVALENTS: dict[str, str] = {
    "～": "〜",  # FULLWIDTH TILDE: CP932's spelling of JIS 1-1-33 WAVE DASH
    "－": "−",  # FULLWIDTH HYPHEN-MINUS: CP932's JIS 1-1-61 MINUS SIGN
    "∥": "‖",  # PARALLEL TO: CP932's JIS 1-1-34 DOUBLE VERTICAL LINE
    "—": "―",  # EM DASH: JIS 1-1-29 is HORIZONTAL BAR in Python's table
    "￠": "¢",
    "￡": "£",
    "￢": "¬",
    "\u00c5": "\u212b",  # Å: canonically equivalent to ANGSTROM SIGN, which is JIS 1-2-82
    "\u00a0": " ",  # NO-BREAK SPACE (&nbsp;)
    **{chr(c): " " for c in range(0x2000, 0x200B)},  # en/em/thin/hair spaces
    "\u202f": " ",
    "\u205f": " ",
}

_CIRCLED = {chr(0x2460 + i): f"({i + 1})" for i in range(20)}  # ①-⑳ (NEC row 13)
_CIRCLED |= {chr(0x2776 + i): f"({i + 1})" for i in range(10)}  # ❶-❿
_CIRCLED |= {chr(0x2780 + i): f"({i + 1})" for i in range(10)}  # ➀-➉
_CIRCLED |= {chr(0x278A + i): f"({i + 1})" for i in range(10)}  # ➊-➓
_CIRCLED |= {chr(0x24F5 + i): f"({i + 1})" for i in range(10)}  # ⓵-⓾

#: Machine-dependent characters and typography with a conventional spelling
#: in JIS X 0208 (text only, never a person's name).  NFKC handles the rest
#: of NEC row 13 (㈱ ㍻ Ⅳ ㎡ ㍉ ℡ …).
SUBSTITUTES: dict[str, str] = {
    **_CIRCLED,
    "㊤": "(上)", "㊥": "(中)", "㊦": "(下)", "㊧": "(左)", "㊨": "(右)", "㊙": "(秘)",
    "№": "No.",
    "∑": "Σ",
    "〝": "“", "〞": "”", "〟": "”",  # double-prime quotation marks (NEC row 13)
    "«": "≪", "»": "≫",
    "•": "・", "‣": "・", "◦": "・", "∙": "・", "⁃": "・", "▪": "・", "▫": "・", "⦁": "・", "∘": "・",
    "◉": "◎",
    "▶": "→", "►": "→", "▸": "→", "▷": "→", "▻": "→", "▹": "→", "➡": "→",
    "◀": "←", "◄": "←", "◁": "←", "⬅": "←", "⬆": "↑", "⬇": "↓",
    "〖": "【", "〗": "】", "〘": "〔", "〙": "〕", "｟": "((", "｠": "))",  # bracket variants outside JIS
    "〻": "々", "゠": "＝", "ゕ": "ヵ", "ゖ": "ヶ",
    # small (Ainu) katakana
    **dict(zip("ㇰㇱㇲㇳㇴㇵㇶㇷㇸㇹㇺㇻㇼㇽㇾㇿ", "クシストヌハヒフヘホムラリルレロ", strict=True)),
    "–": "-", "‒": "-", "ʼ": "’", "￤": "|", "¦": "|",
    "©": "(C)", "®": "(R)", "€": "EUR", "½": "1/2", "¼": "1/4", "¾": "3/4",
    "✓": "○", "✔": "○", "☑": "○", "✅": "○",
    "✗": "×", "✘": "×", "❌": "×", "❎": "×", "✖": "×",
    "⭐": "☆", "🌟": "☆",
    "☎": "TEL", "📞": "TEL",
    "⚠": "(!)",
    "ß": "ss", "æ": "ae", "Æ": "AE", "œ": "oe", "Œ": "OE", "ø": "o", "Ø": "O", "đ": "d", "ł": "l", "Ł": "L",
}

_REMOVED = frozenset("\u200b\u200c\u200e\u200f\u2060\ufeff\u00ad\x1b\x0e\x0f")  # zero-width, ISO 2022 shifts
_EMOJI = (
    "\U0001F000-\U0001FAFF\u2600-\u27BF\u2B00-\u2BFF\u2300-\u23FF"
)
_UNIT = re.compile(
    "[\\s\\S][\u0300-\u036f\u3099\u309a]+"  # a letter with combining marks (NFD text, e.g. from macOS)
    "|[\uff61-\uff9f]+"  # a run of half-width katakana (NFKC as a whole: ｶﾞ → ガ)
    "|[0-9#*]\ufe0f?\u20e3"  # keycap 1️⃣
    f"|[{_EMOJI}][\ufe0e\ufe0f\U0001F3FB-\U0001F3FF\U000E0020-\U000E007F]*"
    f"(?:\u200d[{_EMOJI}][\ufe0e\ufe0f\U0001F3FB-\U0001F3FF]*)*"  # an emoji sequence
    "|[^\x00-\x0d\x10-\x1a\x1c-\x7f]"  # any other non-ASCII character, and ESC/SO/SI
)


@dataclass(frozen=True)
class Replacement:
    """``original`` was written as ``replacement`` (``""``: removed), ``count`` times."""

    original: str
    replacement: str
    count: int = 1

    def __str__(self) -> str:
        return f"{self.original} → {self.replacement or '(removed)'} ×{self.count}"


@lru_cache(maxsize=16384)
def _encodable(text: str) -> bool:
    try:
        text.encode(JIS_CODEC)
    except UnicodeEncodeError:
        return False
    return True


def fits_jis(text: str) -> bool:
    """True when ``text`` encodes as ISO-2022-JP (JIS X 0208, Python's ``iso2022_jp``)."""
    try:
        text.encode(JIS_CODEC)
    except UnicodeEncodeError:
        return False
    return "\x1b" not in text and "\x0e" not in text and "\x0f" not in text


def _equivalent(unit: str) -> str | None:
    if "\uff61" <= unit[0] <= "\uff9f":
        out = unicodedata.normalize("NFKC", unit)
        # A voiced mark with nothing to combine with stays a spacing mark (゛ ゜).
        return out.replace("\u3099", "゛").replace("\u309a", "゜")
    if unit in EQUIVALENTS:
        return EQUIVALENTS[unit]
    canonical = unicodedata.normalize("NFC", unit)  # か+゙ → が, 塚 (U+FA10) → 塚
    if canonical != unit and _encodable(canonical):
        return canonical
    return None


def _substitute(unit: str) -> str | None:
    if unit in SUBSTITUTES:
        return SUBSTITUTES[unit]
    if unit[0] in _REMOVED:
        return ""
    if len(unit) > 1 and unit[-1] == "\u20e3":  # keycap
        return f"({unit[0]})"
    base = unit[0]
    if len(unit) > 1 or re.match(f"[{_EMOJI}]", base):
        if _encodable(base):
            return base  # ★️ → ★: only the emoji presentation selector goes
        if base in SUBSTITUTES:
            return SUBSTITUTES[base]
        if re.match(f"[{_EMOJI}]", base):
            return ""
    nfkc = unicodedata.normalize("NFKC", unit)
    if nfkc != unit and _encodable(nfkc):
        return nfkc
    stripped = "".join(c for c in unicodedata.normalize("NFKD", unit) if not unicodedata.combining(c))
    if stripped != unit and stripped.isascii() and stripped.isprintable() and stripped:
        return stripped
    return None


def map_for_jis(text: str, *, names: bool = False) -> tuple[str, tuple[Replacement, ...]]:
    """``text`` with what ISO-2022-JP cannot carry replaced (see the module doc),
    and the replacements made.  Unmappable characters are left in place.
    ``names=True`` allows only the equivalents (for display names)."""
    if fits_jis(text):
        return text, ()
    counts: Counter[tuple[str, str]] = Counter()

    def one(m: re.Match) -> str:
        unit = m.group()
        if _encodable(unit) and unit not in _REMOVED:
            return unit
        out = _equivalent(unit)
        if out is None and not names:
            out = _substitute(unit)
        if out is None or not _encodable(out):
            return unit
        counts[(unit, out)] += 1
        return out

    mapped = _UNIT.sub(one, text)
    return mapped, tuple(Replacement(o, r, n) for (o, r), n in counts.items())


def unmappable(text: str) -> list[str]:
    """The distinct characters of ``text`` that ISO-2022-JP cannot carry, in order."""
    if fits_jis(text):
        return []
    seen: dict[str, None] = {}
    for c in text:
        if c in "\x1b\x0e\x0f" or not _encodable(c):
            seen.setdefault(c)
    return list(seen)


def merge_replacements(*groups: Iterable[Replacement]) -> tuple[Replacement, ...]:
    """Add up the counts of the same replacement made in several texts."""
    counts: Counter[tuple[str, str]] = Counter()
    for group in groups:
        for r in group:
            counts[(r.original, r.replacement)] += r.count
    return tuple(Replacement(o, r, n) for (o, r), n in counts.items())


def describe(replacements: Iterable[Replacement]) -> str:
    """``① → (1) ×3, ㈱ → (株) ×1``"""
    return ", ".join(str(r) for r in replacements)
