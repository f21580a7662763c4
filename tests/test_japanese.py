"""Display width, wrapping with kinsoku and ISO-2022-JP mapping (newsletter.japanese).

The corpus below is written for these tests: long sentences without a break
opportunity for many columns, punctuation that lands on every column of a
line edge, ASCII words and URLs inside Japanese, half-width katakana,
machine-dependent characters and emoji.  Every wrapped paragraph is checked
for the same invariants as the random ones from hypothesis:

- every line fits the width, unless it could not be broken anywhere earlier
  (one unbreakable piece — a long URL — wider than the line);
- no line starts with a NO_START character or a space, no line ends with a
  NO_END character, no ASCII word or URL is split;
- nothing is lost or added: the lines, with the inserted breaks and the
  continuation indent taken out, are the paragraph again.

The legality rules are restated here on their own (``legal_break``) rather
than borrowed from the module, so the test does not grade itself.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from newsletter import japanese
from newsletter.editions.render import date_texts, html_to_text
from newsletter.japanese import (
    INSEPARABLE,
    NO_END,
    NO_START,
    Replacement,
    display_width,
    fits_jis,
    map_for_jis,
    split_prefix,
    unmappable,
    wrap,
    wrap_line,
)

# --------------------------------------------------------------------------- the corpus

LONG_SENTENCE = (
    "地方公共団体における行政手続のオンライン化推進に向けた基盤整備と職員の能力開発を一体的に進めるための"
    "総合的な計画策定に関する検討会報告書の概要と今後の工程表についての取りまとめ結果報告"
)
PUNCTUATION = (
    "「住民の声」を聞く。（仮称）『地域会議』は、【速報】ちょっと待って……ーっ！？と言った。"
    "〔注〕《参考》〈別紙〉――いわゆる「書かない窓口」、ｶﾀｶﾅ｡ｷｬｯｼｭﾚｽ､ぁぃぅぇぉっゃゅょゎァィゥェォッャュョヮヵヶ々ゝゞヽヾ。"
)
MIXED_ASCII = (
    "デジタル庁のDX推進計画（Digital Transformation）の素案はPDF形式で公開されており、"
    "詳しくは https://www.digital.go.jp/policies/dx-plan/2026 をご覧ください。"
    "問い合わせ先はsupport@example.jpまで、受付は平日9:00〜17:00です。"
)
LONG_URL = (
    "資料一覧https://www.pref.shinonome.example.jp/kensei/dx/keikaku/dai2ji/soan/public-comment/2026/11/20/"
    "shiryou-ichiran.html?utm_source=mailmagazine&utm_medium=emailを参照してください。"
)
HALF_WIDTH = "ｵﾝﾗｲﾝ申請ｼｽﾃﾑの利用者ｱﾝｹｰﾄを実施しました。ｶﾞｲﾄﾞﾌﾞｯｸとﾊﾟﾝﾌﾚｯﾄは、ﾎｰﾑﾍﾟｰｼﾞからﾀﾞｳﾝﾛｰﾄﾞできます｡"
MACHINE_DEPENDENT = (
    "㈱東雲データと㈲日和工務店が①計画策定②システム構築③運用保守を担う。Ⅰ期・Ⅱ期・Ⅴ期に分け、"
    "㍻から続く事業を刷新する。面積は約１２０㎡、〝書かない窓口〟を実現し、№１の満足度を目指す。"
)
EMOJI = "🎉 新サービス開始！📅 12月1日から受付 ✅ 申請は簡単 👨‍👩‍👧 子育て世帯も対象です⚠️ 詳細は窓口へ☎️"
LIST_ITEMS = [
    "- 県が所管する行政手続の90%以上をオンラインで完結（現在は約62%）させることを目標とし、"
    "添付書類の削減も同時に進める",
    "1. 市町村と共同で利用する基幹システムの対象業務を拡大し、住民記録や税務などの標準化に対応する",
    "  * 全職員の1割にあたる約600人を「DX推進リーダー」に認定し、各課の業務改善を担ってもらう",
    "・窓口の混雑状況をウェブサイトでリアルタイムに公開し、来庁する時間帯を分散させる取り組み",
    "① 申請書の記入が不要になる手続は約40に上り、来年度からは全支所で利用できるようになる予定です",
    "> 住民の方からは「書かなくてよいので、待ち時間が短くなった」という声が多く寄せられています。",
]
INDENTED = "\u3000東雲県は11月20日、令和9年度から4年間を計画期間とする「第2次DX推進計画」の素案を公表した。"
TITLE = "◆ 東雲県、「第2次DX推進計画」素案を公表\u3000県の行政手続の9割をオンライン化へ"
ENGLISH = (
    "The prefecture published the draft of its second digital transformation plan on 20 November; "
    "comments are welcome until 19 December at https://www.pref.shinonome.example.jp/dx/plan2 (English summary)."
)

CORPUS = [LONG_SENTENCE, PUNCTUATION, MIXED_ASCII, LONG_URL, HALF_WIDTH, MACHINE_DEPENDENT, EMOJI,
          *LIST_ITEMS, INDENTED, TITLE, ENGLISH]
WIDTHS = [30, 40, 56, 70, 76]

URL_RE = re.compile(r"https?://[\x21-\x7e]+")


# --------------------------------------------------------------------------- invariants, restated


def is_ascii_word(c: str) -> bool:
    return "!" <= c <= "~"


def is_fw_alnum(c: str) -> bool:
    return bool(re.match(r"[０-９Ａ-Ｚａ-ｚ]", c))


def joins_previous(c: str) -> bool:
    return unicodedata.combining(c) > 0 or c in "\u200d\u20e3" or "\ufe00" <= c <= "\ufe0f" \
        or "\U0001f3fb" <= c <= "\U0001f3ff"


def legal_break(s: str, i: int) -> bool:
    """May a line break fall between s[i-1] and s[i] (s: a paragraph's content)?"""
    before, after = s[:i], s[i]
    visible = before.rstrip(" \t\u3000\u200b")
    if not visible or after in " \t\u3000\u200b" or after in NO_START or visible[-1] in NO_END:
        return False
    if joins_previous(after) or before[-1] == "\u200d" or "\u00a0" in (before[-1], after):
        return False
    if before[-1] in " \t\u3000\u200b":
        return True
    if is_ascii_word(before[-1]) and is_ascii_word(after):
        return False
    if is_fw_alnum(before[-1]) and is_fw_alnum(after):
        return False
    return not (before[-1] == after and after in INSEPARABLE)


def check_wrapped(line: str, width: int, ambiguous: int = 2) -> list[str]:
    lines = wrap_line(line, width, ambiguous=ambiguous)
    first, cont, content = split_prefix(line, ambiguous)
    if display_width(cont, ambiguous) > width // 2:
        cont = ""
    # Nothing lost or added.
    assert lines[0].startswith(first)
    assert all(out.startswith(cont) for out in lines[1:]), lines
    assert lines[0] + "".join(out[len(cont):] for out in lines[1:]) == line
    pieces = [lines[0][len(first):]] + [out[len(cont):] for out in lines[1:]]
    assert len(lines) == 1 or all(pieces), lines  # no inserted line of indentation only
    position = 0
    for k, (out, piece) in enumerate(zip(lines, pieces, strict=True)):
        if k > 0:
            # The break before this line was a legal one.
            assert legal_break(content, position), (k, lines)
            assert piece[0] not in NO_START and piece[0] not in " \u3000", (k, lines)
        if k < len(lines) - 1:
            assert piece.rstrip(" \t\u3000")[-1:] not in NO_END, (k, lines)
        # Within the width, or it could not have been broken any earlier.
        if display_width(out, ambiguous) > width:
            prefix_width = display_width(lines[0][: len(first)] if k == 0 else cont, ambiguous)
            for p in range(1, len(piece)):
                if legal_break(content, position + p):
                    assert prefix_width + display_width(piece[:p], ambiguous) > width, (k, p, lines)
        position += len(piece)
    # No URL is split across lines.
    for url in URL_RE.findall(content):
        assert any(url in out for out in lines), (url, lines)
    return lines


# --------------------------------------------------------------------------- display width


def test_display_width_counts_east_asian_width():
    assert display_width("abc") == 3
    assert display_width("地方行政") == 8
    assert display_width("ｵﾝﾗｲﾝ") == 5  # half-width katakana: 1 each
    assert display_width("ＡＢＣ１２３") == 12  # full-width: 2 each
    assert display_width("①※○→…") == 10  # ambiguous: full-width in Japanese fonts
    assert display_width("①※", ambiguous=1) == 2
    assert display_width("か\u3099") == 2  # a combining mark takes no column
    assert display_width("👨\u200d👩\u200d👧") == 2  # one glyph
    assert display_width("⚠\ufe0f") == 2  # emoji presentation
    assert display_width("\u3000") == 2 and display_width("\u200b") == 0


# --------------------------------------------------------------------------- the corpus


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("paragraph", CORPUS, ids=lambda p: p[:12])
def test_corpus_invariants(paragraph, width):
    check_wrapped(paragraph, width)


@pytest.mark.parametrize("width", WIDTHS)
def test_mapped_corpus_invariants(width):
    for paragraph in CORPUS:
        mapped, _ = map_for_jis(paragraph)
        check_wrapped(mapped, width)


@pytest.mark.parametrize("shift", range(0, 36))
def test_punctuation_at_every_column_of_a_line_edge(shift):
    # The same run of brackets and marks, shifted one column at a time, so that
    # each of them falls on the last and on the first column of a line somewhere.
    paragraph = "あ" * (shift // 2) + "a" * (shift % 2) + PUNCTUATION * 2
    for width in (30, 70):
        check_wrapped(paragraph, width)


def test_wrap_keeps_paragraphs_and_blank_lines():
    text = "\n".join([LONG_SENTENCE, "", *LIST_ITEMS, "", "短い行", ""])
    wrapped = wrap(text, 40)
    assert wrapped.endswith("\n") and "\n\n" in wrapped
    assert wrapped.split("\n").count("") == 3
    assert "短い行" in wrapped.split("\n")
    assert all(display_width(line) <= 40 for line in wrapped.split("\n") if not URL_RE.search(line))


def test_short_lines_are_left_alone():
    for line in ("", "短い行です。", "%%NL_GREETING%%", "https://news.example.jp/a/1", "  * 項目"):
        assert wrap_line(line, 70) == [line]


# --------------------------------------------------------------------------- exact behaviour


def test_phrase_boundaries_are_preferred():
    lines = wrap_line("石川県内の被災自治体が、住民説明会の意見を踏まえて復興計画の改定案をまとめた。", 70)
    assert lines == ["石川県内の被災自治体が、住民説明会の意見を踏まえて復興計画の改定案を", "まとめた。"]


def test_closing_mark_takes_the_character_before_it_to_the_next_line():
    # 35 full-width characters fill 70 columns; "。" may not start the next line.
    assert wrap_line("あ" * 35 + "。いう", 70) == ["あ" * 34, "あ。いう"]
    assert wrap_line("あ" * 35 + "ーっと", 70) == ["あ" * 34, "あーっと"]
    assert wrap_line("あ" * 34 + "」」いう", 70) == ["あ" * 33, "あ」」いう"]


def test_opening_mark_goes_to_the_next_line():
    assert wrap_line("あ" * 34 + "「いう」", 70) == ["あ" * 34, "「いう」"]
    assert wrap_line("あ" * 33 + "（「いう」）", 70) == ["あ" * 33, "（「いう」）"]


def test_ellipsis_and_dash_pairs_are_not_split():
    lines = wrap_line("あ" * 34 + "……と", 70)
    assert lines == ["あ" * 33, "あ……と"]
    lines = wrap_line("い" * 34 + "――と", 70)  # a dash pair may begin a line, but stays whole
    assert lines == ["い" * 34, "――と"]


def test_ascii_words_are_never_split():
    assert wrap_line("あ" * 33 + "Digital庁", 70) == ["あ" * 33, "Digital庁"]
    lines = wrap_line("The prefecture published the draft of its second digital transformation plan today.", 40,
                      ambiguous=1)
    assert lines == ["The prefecture published the draft of ", "its second digital transformation plan ",
                     "today."]


def test_a_url_longer_than_the_line_stands_alone():
    url = "https://www.pref.shinonome.example.jp/kensei/dx/keikaku/dai2ji/soan/public-comment/shiryou.html"
    lines = wrap_line(f"資料は {url} を参照してください。", 70)
    assert lines == ["資料は ", f"{url} ", "を参照してください。"]
    # Glued to Japanese on both sides, it still gets a line of its own.
    assert wrap_line(f"資料は{url}を参照", 70) == ["資料は", url, "を参照"]
    # A closing mark after it stays with it (kinsoku wins over the width).
    assert wrap_line(f"資料（{url}）。", 70) == ["資料", f"（{url}）。"]


def test_list_items_continue_under_their_text():
    assert wrap_line(LIST_ITEMS[0], 40) == [
        "- 県が所管する行政手続の90%以上を",
        "  オンラインで完結（現在は約62%）させる",
        "  ことを目標とし、添付書類の削減も同時に",
        "  進める",
    ]
    lines = wrap_line(LIST_ITEMS[2], 40)
    assert lines[0].startswith("  * ") and all(line.startswith("    ") for line in lines[1:])
    lines = wrap_line(LIST_ITEMS[3], 40)
    assert all(line.startswith("  ") for line in lines[1:])  # ・ is 2 columns
    lines = wrap_line(LIST_ITEMS[5], 40)
    assert all(line.startswith("> ") for line in lines)  # a quotation repeats its marker
    lines = wrap_line(TITLE, 70)
    assert lines == ["◆ 東雲県、「第2次DX推進計画」素案を公表\u3000県の行政手続の9割を", "   オンライン化へ"]


def test_paragraph_indent_is_first_line_only():
    lines = wrap_line(INDENTED, 40)
    assert lines[0].startswith("\u3000東雲県") and not lines[1].startswith((" ", "\u3000"))


# --------------------------------------------------------------------------- hypothesis

HIRAGANA = "あいうえおかきくけこさしすせそたちつてとなにぬねのはひふへほまみむめもやゆよらりるれろわをん"
KATAKANA = "アイウエオカキクケコサシスセソタチツテトナニヌネノハヒフヘホマミムメモヤユヨラリルレロワヲン"
KANJI = "地方行政自治体教育計画素案公表住民説明会意見復興改定県市町村窓口申請手続"
MARKS = "".join(sorted(NO_START | NO_END | INSEPARABLE)) + "\u3000 "
ASCII_WORDS = ["DX", "PDF", "2026", "9:00", "API", "e-Tax", "ver.2", "(仮)", "Digital", "support@example.jp"]
URLS = ["https://news.example.jp/a/1", "http://example.jp/",
        "https://www.pref.shinonome.example.jp/kensei/dx/keikaku/dai2ji/soan/public-comment/2026/11/20/index.html"]
PREFIXES = ["", "- ", "1. ", "  * ", "・", "① ", "> ", "■ ", "\u3000", "  "]

piece = st.one_of(
    st.text(alphabet=HIRAGANA + KATAKANA + KANJI, min_size=1, max_size=12),
    st.text(alphabet=MARKS, min_size=1, max_size=3),
    st.sampled_from(ASCII_WORDS),
    st.sampled_from(URLS),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789 .,()-", min_size=1, max_size=15),
    st.text(alphabet="ｱｲｳｴｵｶﾞｷﾞﾊﾟｰｯｬ｡｢｣､･", min_size=1, max_size=6),
    st.text(alphabet="①②Ⅰ㈱㍻０１２ＡＢ🎉✅", min_size=1, max_size=3),
)
paragraphs = st.builds(lambda p, parts: p + "".join(parts), st.sampled_from(PREFIXES),
                       st.lists(piece, min_size=1, max_size=40))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(paragraph=paragraphs, width=st.integers(min_value=30, max_value=90))
def test_random_paragraphs_keep_every_invariant(paragraph, width):
    check_wrapped(paragraph, width)


@settings(max_examples=200, deadline=None)
@given(text=st.text(min_size=0, max_size=300), width=st.integers(min_value=30, max_value=90))
def test_any_text_comes_back_whole(text, width):
    # Arbitrary Unicode, line breaks included: wrapping only ever inserts breaks.
    text = text.replace("\r", "")
    wrapped = wrap(text, width)
    assert wrapped.count("\n") >= text.count("\n")
    out = wrapped.split("\n")
    rebuilt, k = [], 0
    for line in text.split("\n"):
        lines = wrap_line(line, width)
        assert out[k : k + len(lines)] == lines
        k += len(lines)
        _, cont, _ = split_prefix(line)
        if display_width(cont) > width // 2:
            cont = ""
        rebuilt.append(lines[0] + "".join(x[len(cont):] for x in lines[1:]))
    assert rebuilt == text.split("\n") and k == len(out)


@settings(max_examples=300, deadline=None)
@given(paragraph=paragraphs)
def test_mapping_then_wrapping_keeps_the_invariants(paragraph):
    mapped, _ = map_for_jis(paragraph)
    # Everything in these pieces has a mapping but the kana repeat marks of vertical text.
    assert set(unmappable(mapped)) <= set("〳〴〵")
    assert map_for_jis(mapped) == (mapped, ())  # idempotent
    check_wrapped(mapped, 70)


# --------------------------------------------------------------------------- ISO-2022-JP

EXPECTED_MAPPINGS = [
    ("㈱", "(株)"), ("㈲", "(有)"), ("①", "(1)"), ("⑳", "(20)"), ("Ⅰ", "I"), ("Ⅴ", "V"), ("ⅳ", "iv"),
    ("㍻", "平成"), ("㍼", "昭和"), ("㋿", "令和"), ("㎡", "m2"), ("㌔", "キロ"), ("℡", "TEL"), ("№", "No."),
    ("ｶﾞｲﾄﾞ", "ガイド"), ("ﾊﾟﾝﾌﾚｯﾄ", "パンフレット"), ("ｱｲｳ｡", "アイウ。"), ("\u00a0", " "), ("\u2009", " "),
    ("•", "・"), ("◦", "・"), ("〝", "“"), ("〟", "”"), ("～", "〜"), ("－", "−"), ("∥", "‖"), ("—", "―"),
    ("✅", "○"), ("❌", "×"), ("⚠\ufe0f", "(!)"), ("☎\ufe0f", "TEL"), ("1\ufe0f\u20e3", "(1)"), ("★\ufe0f", "★"),
    ("🎉", ""), ("👨\u200d👩\u200d👧", ""), ("\u200b", ""), ("\x1b", ""), ("café"[3], "e"), ("か\u3099", "が"),
    ("©", "(C)"), ("€", "EUR"), ("«", "≪"),
]


@pytest.mark.parametrize(("original", "expected"), EXPECTED_MAPPINGS)
def test_documented_mappings(original, expected):
    text = f"本文{original}です"
    mapped, replacements = map_for_jis(text)
    assert mapped == f"本文{expected}です"
    assert replacements == (Replacement(original, expected, 1),)
    assert fits_jis(mapped)


def test_corpus_maps_to_jis_and_reports_what_it_replaced():
    mapped, replacements = map_for_jis(MACHINE_DEPENDENT + HALF_WIDTH + EMOJI)
    assert fits_jis(mapped)
    assert "(株)東雲データと(有)日和工務店が(1)計画策定(2)システム構築(3)運用保守" in mapped
    assert "I期・II期・V期" in mapped and "平成から続く" in mapped and "“書かない窓口”" in mapped
    assert "１２０m2" in mapped  # full-width digits are JIS already: untouched
    assert "オンライン申請システム" in mapped and "ガイドブックとパンフレット" in mapped
    assert "新サービス開始！" in mapped and "🎉" not in mapped and "申請は簡単" in mapped
    counts = {r.original: r for r in replacements}
    assert counts["㈱"].replacement == "(株)" and counts["①"].count == 1
    assert str(counts["🎉"]) == "🎉 → (removed) ×1"
    assert japanese.describe([Replacement("①", "(1)", 3)]) == "① → (1) ×3"


def test_text_that_fits_is_returned_as_it_is():
    text = "週刊 地方行政ニュース　第12号（平日9時〜17時）ＡＢＣ①"[:-1]
    assert map_for_jis(text) == (text, ())
    assert fits_jis(text)


def test_unmappable_characters_stay_and_are_listed():
    text = "髙橋さんと﨑山さん、𠮷野家、한국어 ①"
    mapped, replacements = map_for_jis(text)
    assert mapped == "髙橋さんと﨑山さん、𠮷野家、한국어 (1)"
    assert [r.original for r in replacements] == ["①"]
    assert unmappable(mapped) == ["髙", "﨑", "𠮷", "한", "국", "어"]
    assert not fits_jis(mapped)


def test_names_are_never_rewritten_only_respelled():
    assert map_for_jis("ﾔﾏﾀﾞ\u00a0ﾀﾛｳ", names=True)[0] == "ヤマダ タロウ"
    for name in ("山田 太郎①", "髙橋 一郎", "山田🎉", "José"):
        mapped, replacements = map_for_jis(name, names=True)
        assert mapped == name and replacements == () and not fits_jis(mapped)


def test_esc_would_break_the_jis_state_and_is_removed():
    assert not fits_jis("a\x1b$Bb")
    assert map_for_jis("a\x1b$Bb")[0] == "a$Bb"


# --------------------------------------------------------------------------- html_to_text, dates


def test_html_to_text_keeps_the_ideographic_space():
    html = ('<html><body><h3><a href="https://x.example.jp/1">素案を公表\u3000県の手続</a></h3>'
            "<p>\u3000字下げの段落。\u3000全角スペース</p><p>a\u00a0\u00a0b</p></body></html>")
    lines = html_to_text(html).splitlines()
    assert "◆ 素案を公表\u3000県の手続" in lines
    assert "\u3000字下げの段落。\u3000全角スペース" in lines
    assert "a b" in lines  # other white space still collapses, as before


def test_english_dates_do_not_follow_the_process_locale():
    import locale

    saved = locale.setlocale(locale.LC_TIME)
    try:
        try:
            locale.setlocale(locale.LC_TIME, "ja_JP.UTF-8")
        except locale.Error:
            pass  # no Japanese locale here; the names are fixed tables either way
        assert date_texts(datetime(2026, 11, 30, 16, 0, tzinfo=UTC), "Asia/Tokyo", "en") == \
            ("Tuesday, December 1, 2026", "December 1, 2026")
        assert date_texts(datetime(2026, 11, 30, 16, 0, tzinfo=UTC), "Asia/Tokyo", "ja") == \
            ("2026年12月1日(火)", "2026年12月1日")
    finally:
        locale.setlocale(locale.LC_TIME, saved)
