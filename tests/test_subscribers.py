"""Subscribers: ``newsletter subscriber add|import|export|list|show|set|unsubscribe|delete|consent``.

Tests about the database's behaviour run on SQLite and PostgreSQL (``project``); tests about
CSV encodings and shapes use ``sqlite_project``.
"""

from __future__ import annotations

import csv
import io
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, func, select

from newsletter import subscribers as subs
from newsletter.config import load_config
from newsletter.store import make_engine, upgrade
from newsletter.store import subscribers as q
from newsletter.store.tables import consents, subscribers
from tests.conftest import ROOT, write_config


def table(cli, tbl=subscribers) -> list:
    engine = make_engine(load_config(cli.config_path).storage_url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(select(tbl).order_by(tbl.c.id)))
    finally:
        engine.dispose()


def count(cli, tbl=subscribers) -> int:
    engine = make_engine(load_config(cli.config_path).storage_url)
    try:
        with engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(tbl)).scalar_one()
    finally:
        engine.dispose()


def by_email(cli) -> dict:
    return {r.email: r for r in table(cli)}


def set_status(cli, email: str, status: str) -> None:
    engine = make_engine(load_config(cli.config_path).storage_url)
    try:
        subs.set_status(engine, email, status, source="test")
    finally:
        engine.dispose()


def write(folder: Path, name: str, content: str | bytes) -> Path:
    path = folder / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def error_lines(result) -> list[str]:
    return [line.removeprefix("error: ") for line in result.stderr.splitlines() if line.startswith("error: ")]


def show(cli, email: str) -> dict[str, str]:
    out = {}
    for line in cli("subscriber", "show", email).stdout.splitlines():
        if not line.startswith(" ") and ":" in line:
            key, _, value = line.partition(":")
            out[key] = value.strip()
    return out


# --- one at a time ---------------------------------------------------------------------------


def test_add_list_show_set_unsubscribe_consent_delete(project):
    result = project("subscriber", "add", "Sato.Hanako@Example.JP", "--fields", "local-government,education",
                     "--name", "佐藤 花子")
    assert result.stdout.strip() == "created sato.hanako@example.jp (local-government,education, html)"
    project("subscriber", "add", "suzuki@example.com", "--fields", "行政", "--format", "text",
            "--charset", "iso-2022-jp", "--name", "鈴木 一郎")
    project("subscriber", "add", "ito@example.org", "--fields", "教育", "--pending", "--publications", "weekly")

    lines = project("subscriber", "list").stdout.splitlines()
    assert [ln.split("\t")[0] for ln in lines] == ["ito@example.org", "sato.hanako@example.jp", "suzuki@example.com"]
    assert lines[1] == "sato.hanako@example.jp\tactive\tlocal-government,education\thtml\t佐藤 花子"
    assert lines[0].split("\t")[1] == "pending"
    assert project("subscriber", "list", "--status", "active", "--field", "education").stdout.split("\t")[0] == (
        "sato.hanako@example.jp"
    )
    assert project("subscriber", "list", "--field", "行政").stdout.splitlines() == [
        "suzuki@example.com\tactive\tadministration\ttext\t鈴木 一郎"
    ]

    info = show(project, "SATO.HANAKO@example.jp")
    assert info["email"] == "sato.hanako@example.jp"
    assert info["status"] == "active"
    assert info["fields"] == "地方自治 (local-government), 教育 (education)"
    assert info["format"] == "html"
    assert info["charset"] == "(publication default)"
    assert info["publications"] == "weekly"
    assert show(project, "suzuki@example.com")["charset"] == "iso-2022-jp"

    # set replaces (no merge)
    result = project("subscriber", "set", "sato.hanako@example.jp", "--fields", "行政", "--format", "text",
                     "--charset", "iso-2022-jp", "--name", "佐藤 華子")
    assert result.stdout.strip() == (
        "sato.hanako@example.jp: fields=administration, format=text, charset=iso-2022-jp, name=佐藤 華子"
    )
    row = by_email(project)["sato.hanako@example.jp"]
    assert (row.fields, row.format, row.charset, row.name) == ("administration", "text", "iso-2022-jp", "佐藤 華子")
    project("subscriber", "set", "sato.hanako@example.jp", "--charset", "default")
    assert by_email(project)["sato.hanako@example.jp"].charset is None

    result = project("subscriber", "unsubscribe", "sato.hanako@example.jp")
    assert result.stdout.strip() == "sato.hanako@example.jp: unsubscribed (was active; 0 pending deliveries cancelled)"
    assert show(project, "sato.hanako@example.jp")["status"] == "unsubscribed"
    consent = project("subscriber", "consent", "sato.hanako@example.jp").stdout.splitlines()
    assert consent[0] == "sato.hanako@example.jp (unsubscribed)"
    events = [ln.split()[3] for ln in consent[1:]]
    assert events == ["subscribe", "change", "change", "unsubscribed"]
    assert all(ln.split()[4] == "cli" for ln in consent[1:])
    assert "consent:" in project("subscriber", "show", "sato.hanako@example.jp").stdout

    subscriber_id = by_email(project)["sato.hanako@example.jp"].id
    assert any(c.subscriber_id == subscriber_id for c in table(project, consents))
    result = project("subscriber", "delete", "sato.hanako@example.jp", input="n\n", ok=False)
    assert result.exit_code == 1 and "sato.hanako@example.jp" in by_email(project)  # declined: kept
    assert project("subscriber", "delete", "sato.hanako@example.jp", input="y\n").stdout.strip().endswith(
        "sato.hanako@example.jp: deleted"
    )
    assert "sato.hanako@example.jp" not in by_email(project)
    assert not any(c.subscriber_id == subscriber_id for c in table(project, consents))  # erased with it
    result = project("subscriber", "show", "sato.hanako@example.jp", ok=False)
    assert result.exit_code == 1
    assert error_lines(result) == ["sato.hanako@example.jp: no such subscriber"]
    project("subscriber", "delete", "--yes", "suzuki@example.com")
    assert list(by_email(project)) == ["ito@example.org"]


def test_add_again_merges_fields(project):
    project("subscriber", "add", "tanaka@example.jp", "--fields", "education")
    result = project("subscriber", "add", "tanaka@example.jp", "--fields", "地方自治", "--name", "田中 健二")
    assert result.stdout.strip() == "updated tanaka@example.jp (local-government,education, html)"
    row = by_email(project)["tanaka@example.jp"]
    assert (row.fields, row.name) == ("local-government,education", "田中 健二")
    assert count(project) == 1


@pytest.mark.parametrize("status", ["unsubscribed", "bounced", "complained"])
def test_add_never_reactivates(sqlite_project, status):
    sqlite_project("subscriber", "add", "kato@example.jp", "--fields", "education")
    set_status(sqlite_project, "kato@example.jp", status)
    result = sqlite_project("subscriber", "add", "kato@example.jp", "--fields", "education", ok=False)
    assert result.exit_code == 1
    assert error_lines(result) == [
        f"kato@example.jp: is {status}; an operator cannot re-activate it (the person must sign up again)"
    ]
    assert by_email(sqlite_project)["kato@example.jp"].status == status


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("yamada@@example.jp",), "invalid email address 'yamada@@example.jp'"),
        (("yamada@example",), "invalid email address 'yamada@example'"),
        (("",), "missing email address"),
        (("yamada@example.jp", "--fields", "スポーツ"), "unknown field 'スポーツ'"),
        (("yamada@example.jp", "--fields", "education", "--publications", "daily"), "unknown publication 'daily'"),
    ],
)
def test_add_rejects_bad_input(project, args, message):
    result = project("subscriber", "add", *args, ok=False)
    assert result.exit_code == 1
    [line] = result.stderr.splitlines()
    assert line.startswith("error: " + message)
    assert count(project) == 0 and count(project, consents) == 0


def test_idn_addresses(project):
    result = project("subscriber", "add", "user@例え.jp", "--fields", "education", "--name", "例 太郎")
    assert result.stdout.strip() == "created user@例え.jp (education, html)"
    # the A-label spelling of the same domain is the same subscriber
    result = project("subscriber", "add", "user@xn--r8jz45g.jp", "--fields", "行政")
    assert result.stdout.startswith("updated user@例え.jp")
    assert show(project, "USER@例え.JP")["email"] == "user@例え.jp"
    text = "メールアドレス,氏名,分野\r\ntanto@市役所.jp,市役所 担当,地方自治\r\n"
    path = write(project.folder, "idn.csv", text.encode("cp932"))
    project("subscriber", "import", path)
    assert sorted(by_email(project)) == ["tanto@市役所.jp", "user@例え.jp"]
    assert project("subscriber", "list", "--field", "地方自治").stdout.startswith("tanto@市役所.jp\tactive")


# --- CSV import ----------------------------------------------------------------------------

MEMBERS = (
    "メールアドレス,氏名,分野,形式\r\n"
    "sato.hanako@example.jp,佐藤 花子,地方自治,html\r\n"
    "suzuki.ichiro@example.com,鈴木 一郎,行政,テキスト\r\n"
    "takahashi.misaki@example.org,高橋 美咲,教育・行政,HTML\r\n"
    "tanaka.kenji@example.jp,田中 健二,\"local-government,education\",text\r\n"
)


@pytest.mark.parametrize("file_encoding", ["utf-8", "utf-8-sig", "cp932"])
@pytest.mark.parametrize("option", ["auto", "forced"])
def test_import_utf8_bom_and_cp932(sqlite_project, file_encoding, option):
    path = write(sqlite_project.folder, "members.csv", MEMBERS.encode(file_encoding))
    forced = {"utf-8": "utf-8", "utf-8-sig": "utf-8", "cp932": "cp932"}[file_encoding]
    args = ("--encoding", forced) if option == "forced" else ()
    result = sqlite_project("subscriber", "import", path, *args)
    assert result.stdout.strip() == (
        f"imported {path}: 4 rows, 4 new, 0 updated, 0 merged duplicates, 0 left unsubscribed/bounced"
    )
    rows = by_email(sqlite_project)
    assert {e: (r.name, r.fields, r.format, r.status) for e, r in rows.items()} == {
        "sato.hanako@example.jp": ("佐藤 花子", "local-government", "html", "active"),
        "suzuki.ichiro@example.com": ("鈴木 一郎", "administration", "text", "active"),
        "takahashi.misaki@example.org": ("高橋 美咲", "administration,education", "html", "active"),
        "tanaka.kenji@example.jp": ("田中 健二", "local-government,education", "text", "active"),
    }
    consent = sqlite_project("subscriber", "consent", "sato.hanako@example.jp").stdout
    assert "import" in consent and "import:members.csv" in consent


def test_forcing_the_wrong_encoding_names_file_and_line(sqlite_project):
    text = (
        "email,name,fields\r\n"
        "ito.yui@example.com,Ito Yui,education\r\n"
        "kato.hiroshi@example.jp,加藤 浩,行政\r\n"
    )
    path = write(sqlite_project.folder, "members.csv", text.encode("cp932"))
    result = sqlite_project("subscriber", "import", "--encoding", "utf-8", path, ok=False)
    assert result.exit_code == 1
    [line] = result.stderr.splitlines()
    assert line.startswith("error: members.csv:3: not valid utf-8")
    assert count(sqlite_project) == 0
    # auto-detection reads it
    sqlite_project("subscriber", "import", path)
    assert by_email(sqlite_project)["kato.hiroshi@example.jp"].name == "加藤 浩"


def test_undecodable_file_is_refused(sqlite_project):
    path = write(sqlite_project.folder, "broken.csv", b"email,name\r\nx@example.jp,\x81\x20\xff\xfe\r\n")
    result = sqlite_project("subscriber", "import", path, ok=False)
    assert result.exit_code == 1
    assert error_lines(result)[0].startswith("broken.csv: cannot tell the encoding")
    assert count(sqlite_project) == 0


@pytest.mark.parametrize(
    "header",
    [
        "email,name,fields",
        "メールアドレス,氏名,分野",
        "メールアドレス,名前,分野",
        "E-Mail,Name,Fields",
        "メール アドレス,お名前,配信分野",
    ],
)
def test_header_aliases(sqlite_project, header):
    text = f"{header}\r\nnakamura@example.com,中村 拓也,教育\r\n"
    path = write(sqlite_project.folder, "members.csv", text.encode("cp932"))
    sqlite_project("subscriber", "import", path)
    row = by_email(sqlite_project)["nakamura@example.com"]
    assert (row.name, row.fields) == ("中村 拓也", "education")


@pytest.mark.parametrize(
    ("cell", "fields"),
    [
        ("local-government;education", "local-government,education"),
        ('"administration,education"', "administration,education"),
        ("地方自治、教育", "local-government,education"),
        ("行政・教育", "administration,education"),
        ("教育;administration、地方自治", "local-government,administration,education"),
        ("", "local-government,administration,education"),  # no preference: everything
    ],
)
def test_field_lists(sqlite_project, cell, fields):
    path = write(sqlite_project.folder, "members.csv", f"メールアドレス,分野\r\nwatanabe@example.org,{cell}\r\n")
    sqlite_project("subscriber", "import", path)
    assert by_email(sqlite_project)["watanabe@example.org"].fields == fields


def test_a_file_without_an_address_column(sqlite_project):
    path = write(sqlite_project.folder, "members.csv", "氏名,分野\r\n山田 亮,教育\r\n")
    result = sqlite_project("subscriber", "import", path, ok=False)
    assert result.exit_code == 1
    [line] = result.stderr.splitlines()
    assert line.startswith("error: members.csv:1: no 'email' column in the header")


BAD_MEMBERS = (
    "メールアドレス,氏名,分野\r\n"
    "yoshida.naomi@example.com,吉田 直美,地方自治\r\n"
    "kobayashi@@example.org,小林 彩香,行政\r\n"
    "yamamoto.keiko@example.jp,山本 恵子,観光\r\n"
    ",名無し,教育\r\n"
    "watanabe.shota@example.org,渡辺 翔太,教育\r\n"
)


def test_dry_run_reports_each_row_and_writes_nothing(project):
    project("subscriber", "add", "watanabe.shota@example.org", "--fields", "行政")
    before = table(project), table(project, consents)
    path = write(project.folder, "members.csv", BAD_MEMBERS.encode("cp932"))
    result = project("subscriber", "import", "--dry-run", path, ok=False)
    assert result.exit_code == 1
    problems = error_lines(result)
    assert [p.split(": ", 1)[0] for p in problems] == ["members.csv:3", "members.csv:4", "members.csv:5"]
    assert problems[0].startswith("members.csv:3: invalid email address 'kobayashi@@example.org'")
    assert problems[1].startswith("members.csv:4: yamamoto.keiko@example.jp: unknown field '観光'")
    assert problems[2] == "members.csv:5: missing email address"
    assert result.stdout.splitlines()[-1] == (
        f"would import {path}: 5 rows, 1 new, 1 updated, 0 merged duplicates, 0 left unsubscribed/bounced, 3 rejected"
    )
    assert (table(project), table(project, consents)) == before


def test_bad_rows_are_reported_and_the_good_ones_go_in(project):
    path = write(project.folder, "members.csv", BAD_MEMBERS.encode("cp932"))
    result = project("subscriber", "import", path, ok=False)
    assert result.exit_code == 1
    assert len(error_lines(result)) == 3
    assert sorted(by_email(project)) == ["watanabe.shota@example.org", "yoshida.naomi@example.com"]


def test_strict_imports_nothing_when_a_row_is_bad(project):
    project("subscriber", "add", "watanabe.shota@example.org", "--fields", "行政")
    before = table(project), table(project, consents)
    path = write(project.folder, "members.csv", BAD_MEMBERS.encode("cp932"))
    result = project("subscriber", "import", "--strict", path, ok=False)
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1] == "nothing imported: 3 bad row(s) (--strict)"
    assert (table(project), table(project, consents)) == before


def test_malformed_csv_line_changes_nothing(project):
    project("subscriber", "add", "yoshida.naomi@example.com", "--fields", "教育")
    before = table(project), table(project, consents)
    text = (
        "メールアドレス,氏名,分野\r\n"
        "yoshida.naomi@example.com,吉田 直美,地方自治\r\n"
        'sato@example.jp,"佐藤 花子,教育\r\n'
        "suzuki@example.com,鈴木 一郎,行政\r\n"
    )
    path = write(project.folder, "members.csv", text.encode("cp932"))
    result = project("subscriber", "import", path, ok=False)
    assert result.exit_code == 1
    [line] = result.stderr.splitlines()
    assert line.startswith("error: members.csv:3: malformed CSV line")
    assert (table(project), table(project, consents)) == before


def test_too_many_cells(sqlite_project):
    path = write(sqlite_project.folder, "members.csv", "email,name,fields\r\nito@example.com,伊藤,教育,余分\r\n")
    [line] = sqlite_project("subscriber", "import", path, ok=False).stderr.splitlines()
    assert line == "error: members.csv:2: 4 cells but the header has 3 columns"
    assert count(sqlite_project) == 0


def test_control_characters_in_names_are_blanked(project):
    path = write(project.folder, "members.csv", "email,name\r\nito@example.com,伊\x00藤\x1b\r\n")
    project("subscriber", "import", path, "--fields", "教育")
    assert by_email(project)["ito@example.com"].name == "伊 藤"
    project("subscriber", "set", "ito@example.com", "--name", "伊藤\r\nBcc: x@example.jp")
    assert by_email(project)["ito@example.com"].name == "伊藤  Bcc: x@example.jp"


def test_duplicates_in_the_file_and_in_the_database_are_merged(project):
    project("subscriber", "add", "kato.hiroshi@example.jp", "--fields", "education", "--name", "加藤 浩")
    text = (
        "email,name,fields\r\n"
        "Kato.Hiroshi@Example.jp,,administration\r\n"
        "yamada.ryo@example.org,山田 亮,地方自治\r\n"
        "YAMADA.RYO@example.org,,教育\r\n"
        "yamada.ryo@example.org,山田 亮（総務課）,\r\n"
    )
    path = write(project.folder, "members.csv", text)
    result = project("subscriber", "import", path)
    assert result.stdout.strip() == (
        f"imported {path}: 4 rows, 1 new, 1 updated, 2 merged duplicates, 0 left unsubscribed/bounced"
    )
    rows = by_email(project)
    assert len(rows) == 2
    assert (rows["kato.hiroshi@example.jp"].fields, rows["kato.hiroshi@example.jp"].name) == (
        "administration,education", "加藤 浩",
    )
    assert (rows["yamada.ryo@example.org"].fields, rows["yamada.ryo@example.org"].name) == (
        "local-government,administration,education", "山田 亮（総務課）",
    )
    events = {(c.subscriber_id, c.event) for c in table(project, consents)}
    assert (rows["kato.hiroshi@example.jp"].id, "change") in events
    assert (rows["yamada.ryo@example.org"].id, "import") in events
    # importing the same file again changes nothing
    assert ", 0 new, 0 updated," in project("subscriber", "import", path).stdout


def test_import_never_reactivates(project):
    for email in ("a.unsub@example.jp", "b.bounce@example.jp", "c.complain@example.jp", "d.active@example.jp"):
        project("subscriber", "add", email, "--fields", "education")
    project("subscriber", "unsubscribe", "a.unsub@example.jp")
    set_status(project, "b.bounce@example.jp", "bounced")
    set_status(project, "c.complain@example.jp", "complained")
    emails = ("a.unsub@example.jp", "b.bounce@example.jp", "c.complain@example.jp", "d.active@example.jp")
    text = "email,fields\r\n" + "".join(f"{e},行政\r\n" for e in emails)
    path = write(project.folder, "members.csv", text)
    result = project("subscriber", "import", "--dry-run", path)
    assert "note: members.csv:2: a.unsub@example.jp: is unsubscribed; left as it is" in result.stdout
    result = project("subscriber", "import", path)
    assert "1 updated, 0 merged duplicates, 3 left unsubscribed/bounced" in result.stdout
    rows = by_email(project)
    assert {e: (r.status, r.fields) for e, r in rows.items()} == {
        "a.unsub@example.jp": ("unsubscribed", "education"),
        "b.bounce@example.jp": ("bounced", "education"),
        "c.complain@example.jp": ("complained", "education"),
        "d.active@example.jp": ("active", "administration,education"),
    }


# --- export --------------------------------------------------------------------------------


def test_export_for_excel_and_plain(project):
    project("subscriber", "add", "sato.hanako@example.jp", "--fields", "地方自治、教育", "--name", "佐藤 花子")
    project("subscriber", "add", "suzuki@example.com", "--fields", "行政", "--format", "text", "--name", "鈴木 一郎")
    project("subscriber", "unsubscribe", "suzuki@example.com")
    excel = project.folder / "excel.csv"
    assert project("subscriber", "export", "--excel", excel).stdout.strip() == f"exported 2 subscribers to {excel}"
    data = excel.read_bytes()
    assert data.startswith(b"\xef\xbb\xbf")
    assert data.count(b"\r\n") == 3 and data.count(b"\n") == 3
    rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))
    assert rows[0] == ["メールアドレス", "氏名", "分野", "形式", "文字コード", "状態", "配信誌", "登録日時"]
    assert rows[1][:6] == ["sato.hanako@example.jp", "佐藤 花子", "local-government;education", "html", "", "active"]
    assert rows[2][:6] == ["suzuki@example.com", "鈴木 一郎", "administration", "text", "", "unsubscribed"]

    plain = project.folder / "plain.csv"
    project("subscriber", "export", "--status", "active", plain)
    data = plain.read_bytes()
    assert not data.startswith(b"\xef\xbb\xbf") and b"\r\n" not in data
    assert data.decode("utf-8").splitlines()[1].startswith("sato.hanako@example.jp,佐藤 花子,")
    assert len(data.decode("utf-8").splitlines()) == 2


def test_export_neutralises_formula_injection(sqlite_project):
    names = {
        "a@example.jp": "=HYPERLINK(\"https://evil.example.com\",\"詳細\")",
        "b@example.jp": "+81-3-1234-5678",
        "c@example.jp": "-山田",
        "d@example.jp": "@佐藤",
        "e@example.jp": "普通の名前",
    }
    for email, name in names.items():
        sqlite_project("subscriber", "add", email, "--fields", "教育", "--name", name)
    sqlite_project("subscriber", "add", "--fields", "教育", "--", "-info@example.jp")
    path = sqlite_project.folder / "out.csv"
    sqlite_project("subscriber", "export", "--excel", path)
    rows = {r[0]: r[1] for r in csv.reader(io.StringIO(path.read_text(encoding="utf-8-sig"), newline=""))}
    assert rows["a@example.jp"] == "'=HYPERLINK(\"https://evil.example.com\",\"詳細\")"
    assert rows["b@example.jp"] == "'+81-3-1234-5678"
    assert rows["c@example.jp"] == "'-山田"
    assert rows["d@example.jp"] == "'@佐藤"
    assert rows["e@example.jp"] == "普通の名前"
    assert rows["'-info@example.jp"] == ""
    # and reading the export back gives the original values, not new subscribers
    engine = make_engine(load_config(sqlite_project.config_path).storage_url)
    with engine.begin() as conn:
        conn.execute(delete(consents))
        conn.execute(delete(subscribers))
    engine.dispose()
    sqlite_project("subscriber", "import", path)
    assert {e: r.name for e, r in by_email(sqlite_project).items()} == {**names, "-info@example.jp": ""}


# --- export → import round trip (property) -----------------------------------------------------

NAME_CHARS = "山田太郎花子佐藤鈴木高橋伊藤渡辺ーヶ々・、。「」（）髙﨑　 abcXYZ019=+-@'\",;"
FORMULA_PREFIX = st.sampled_from(["", "", "-", "+", "=", "'"])

person = st.tuples(
    FORMULA_PREFIX,
    st.sampled_from(["example.jp", "example.com", "例え.jp", "市役所.jp"]),
    st.one_of(st.just(""), st.builds(str.__add__, FORMULA_PREFIX, st.text(alphabet=NAME_CHARS, max_size=20))),
    st.sets(st.sampled_from(["local-government", "administration", "education"]), min_size=1),
    st.sampled_from(["html", "text"]),
    st.sampled_from([None, "utf-8", "iso-2022-jp"]),
    st.sampled_from([None, "weekly"]),
)


def test_export_then_import_round_trips():
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        config = load_config(write_config(folder / "project", f"sqlite:///{folder / 'rt.db'}"))
        engine = make_engine(config.storage_url)
        upgrade(engine)

        @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(people=st.lists(person, max_size=8), excel=st.booleans())
        def check(people, excel):
            wanted = {}
            for i, (prefix, domain, name, fields, fmt, charset, pubs) in enumerate(people):
                name = name.strip()
                wanted[f"{prefix}u{i}@{domain}"] = (name, ",".join(config.sort_fields(fields)), fmt, charset, pubs)
            with engine.begin() as conn:
                conn.execute(delete(consents))
                conn.execute(delete(subscribers))
                q.insert_many(conn, [
                    {"email": e, "name": n, "fields": f, "format": fm, "charset": c, "publications": p,
                     "status": "active"}
                    for e, (n, f, fm, c, p) in wanted.items()
                ])
            path = folder / "export.csv"
            assert subs.export_csv(engine, config, path, excel=excel) == len(wanted)
            with engine.begin() as conn:
                conn.execute(delete(subscribers))
            report = subs.import_csv(engine, config, path)
            assert report.problems == [] and report.created == len(wanted)
            with engine.connect() as conn:
                got = {
                    r.email: (r.name, r.fields, r.format, r.charset, r.publications)
                    for r in q.list_subscribers(conn)
                }
            assert got == wanted

        try:
            check()
        finally:
            engine.dispose()


# --- suppression and erasure: one path, the real reason, nothing left to send ------------------


def edition_with_pending(cli, *emails: str) -> tuple:
    """Subscribers, one article and edition 1 created but not sent: a pending delivery each."""
    for address in emails:
        cli("subscriber", "add", address, "--fields", "education", "--name", "山田 花子")
    cli("article", "add", "--field", "education", "--title", "県立高校の再編計画、来年度から",
        "--url", "https://news.example.jp/e/saihen", "--summary", "再編の概要です。")
    from newsletter.editions import creation

    config = load_config(cli.config_path)
    engine = make_engine(config.storage_url)
    # Created and planned as the one-step send does it (``edition create`` makes a draft, with no deliveries yet).
    assert creation.create_edition(engine, config, config.publication("weekly")).pending == len(emails)
    return config, engine


def deliveries_by_email(engine) -> dict:
    from newsletter.store.tables import deliveries

    with engine.connect() as conn:
        return {r.email: r for r in conn.execute(select(deliveries))}


def test_unsubscribe_cancels_with_its_reason_and_clears_the_lease(project):
    """A delivery a run has claimed (leased) is cancelled with the reason "unsubscribed"
    and loses its lease, so no run still holding it may write to it."""
    from datetime import timedelta

    from newsletter.store import editions as eq
    from newsletter.store.tables import utcnow

    _, engine = edition_with_pending(project, "taro@example.jp", "hanako@example.jp")
    try:
        now = utcnow()
        with engine.begin() as conn:
            claimed = eq.claim(conn, 1, now, 10, now + timedelta(minutes=2))
        assert len(claimed) == 2
        out = project("subscriber", "unsubscribe", "taro@example.jp").stdout
        assert "1 pending deliveries cancelled" in out
        rows = deliveries_by_email(engine)
        taro = rows["taro@example.jp"]
        assert (taro.status, taro.last_reply, taro.lease_until) == ("cancelled", "unsubscribed", None)
        assert rows["hanako@example.jp"].status == "pending" and rows["hanako@example.jp"].lease_until is not None
        # Again: nothing changes, and the consent record does not grow.
        before = count(project, consents)
        again = project("subscriber", "unsubscribe", "taro@example.jp").stdout
        assert "already unsubscribed (0 pending deliveries cancelled)" in again
        assert count(project, consents) == before
    finally:
        engine.dispose()


def test_erased_subscriber_gets_nothing_from_an_edition_created_before(project):
    """``subscriber delete`` after the edition was created: the file outbox receives
    the other reader's mail only, and the delivery log keeps the row (the edition's
    counts stay true) but not the address."""
    config, engine = edition_with_pending(project, "kesu@example.jp", "nokoru@example.jp")
    try:
        out = project("subscriber", "delete", "--yes", "kesu@example.jp").stdout
        assert out.strip().endswith("kesu@example.jp: deleted")
        project("edition", "send", "weekly")
        outbox = config.base_dir / "var" / "outbox"
        sent = [p.read_bytes() for p in outbox.glob("*.eml")]
        assert len(sent) == 1
        assert b"nokoru@example.jp" in sent[0] and not any(b"kesu@example.jp" in m for m in sent)
        rows = deliveries_by_email(engine)
        assert set(rows) == {"nokoru@example.jp", q.ERASED}
        erased = rows[q.ERASED]
        assert (erased.status, erased.last_reply, erased.subscriber_id, erased.domain) == (
            "cancelled", "erased", None, "")
        assert rows["nokoru@example.jp"].status == "sent"
        status = project("edition", "status", "1").stdout
        assert "cancelled:   1" in status and "sent:        1" in status
        # Nothing of the address is left anywhere in the database.
        from sqlalchemy import MetaData

        meta = MetaData()
        meta.reflect(engine)
        with engine.connect() as conn:
            for tbl in meta.sorted_tables:
                for row in conn.execute(select(tbl)):
                    assert not any("kesu@" in str(v) for v in row), (tbl.name, row)
    finally:
        engine.dispose()


def test_concurrent_unsubscribes_write_one_consent_row(project):
    """Many one-click POSTs on one token at once (mail clients and scanners do this):
    the status changes once and the consent record gets one row."""
    import threading

    config = load_config(project.config_path)
    project("subscriber", "add", "renda@example.jp", "--fields", "education")
    engine = make_engine(config.storage_url)
    try:
        sid = by_email(project)["renda@example.jp"].id
        before = count(project, consents)
        start = threading.Barrier(12)
        errors: list[BaseException] = []

        def click() -> None:
            start.wait()
            try:
                subs.unsubscribe_id(engine, sid, source="one-click")
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=click) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert count(project, consents) == before + 1
        assert by_email(project)["renda@example.jp"].status == "unsubscribed"
    finally:
        engine.dispose()


# --- columns (issue 11, item 11) -------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        "Eメール,お名前,希望分野",
        "電子メール,氏名(漢字),購読分野",
        "E-mail,氏名（漢字）,配信分野",
        "Ｅメール,お名前,分野",
        "メール,名前,配信希望分野",
        "ﾒｰﾙｱﾄﾞﾚｽ,氏名,ジャンル",
    ],
)
def test_japanese_header_names(sqlite_project, header):
    text = f"{header}\r\nnakamura@example.com,中村 拓也,教育\r\n"
    path = write(sqlite_project.folder, "members.csv", text.encode("cp932"))
    result = sqlite_project("subscriber", "import", path)
    assert result.stderr == ""
    row = by_email(sqlite_project)["nakamura@example.com"]
    assert (row.name, row.fields) == ("中村 拓也", "education")


def test_format_column_names(sqlite_project):
    text = "メールアドレス,分野,配信形式\r\nito@example.org,教育,テキスト\r\n"
    path = write(sqlite_project.folder, "members.csv", text)
    sqlite_project("subscriber", "import", path)
    assert by_email(sqlite_project)["ito@example.org"].format == "text"


def test_unknown_columns_are_reported(project):
    text = (
        "メールアドレス,氏名,分野,備考,フリガナ\r\n"
        "sato.hanako@example.jp,佐藤 花子,教育,総務課長,サトウ ハナコ\r\n"
    )
    path = write(project.folder, "members.csv", text.encode("cp932"))
    result = project("subscriber", "import", path)
    warnings = result.stderr.splitlines()
    assert [w.split(" ignored")[0] for w in warnings] == [
        "warning: members.csv:1: unknown column '備考'",
        "warning: members.csv:1: unknown column 'フリガナ'",
    ]
    assert "email/メールアドレス" in warnings[0] and "fields/分野" in warnings[0]
    assert result.stdout.strip().endswith("1 rows, 1 new, 0 updated, 0 merged duplicates, 0 left unsubscribed/bounced")
    assert by_email(project)["sato.hanako@example.jp"].fields == "education"


def test_a_file_without_a_fields_column_needs_fields(project):
    # "希望の分野" is no name we know: before, every reader silently got every field
    text = (
        "メールアドレス,氏名,希望の分野\r\n"
        "sato.hanako@example.jp,佐藤 花子,教育\r\n"
        "suzuki@example.com,鈴木 一郎,行政\r\n"
    )
    path = write(project.folder, "members.csv", text.encode("cp932"))
    result = project("subscriber", "import", path, ok=False)
    assert result.exit_code == 1
    warning, error = result.stderr.splitlines()
    assert warning.startswith("warning: members.csv:1: unknown column '希望の分野' ignored")
    assert error.startswith("error: members.csv:1: no fields column in the header (accepted names: fields, 分野, ")
    assert error.endswith("give --fields to choose the fields of every reader in the file")
    assert count(project) == 0 and count(project, consents) == 0

    project("subscriber", "import", path, "--fields", "行政")
    assert {e: r.fields for e, r in by_email(project).items()} == {
        "sato.hanako@example.jp": "administration", "suzuki@example.com": "administration",
    }
    result = project("subscriber", "import", path, "--fields", "スポーツ", ok=False)
    assert result.stderr.splitlines()[-1].startswith("error: --fields: unknown field 'スポーツ'")


def test_fields_option_fills_empty_cells(sqlite_project):
    text = "email,fields\r\na@example.jp,\r\nb@example.jp,教育\r\n"
    path = write(sqlite_project.folder, "members.csv", text)
    sqlite_project("subscriber", "import", path, "--fields", "地方自治,行政")
    assert {e: r.fields for e, r in by_email(sqlite_project).items()} == {
        "a@example.jp": "local-government,administration", "b@example.jp": "education",
    }


# --- streaming (issue 11, item 15) ---------------------------------------------------------------


def members_csv(path: Path, rows: int, *, start: int = 0) -> Path:
    cells = ["地方自治", "行政", "教育", "地方自治、行政", "行政・教育"]
    with open(path, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, lineterminator="\r\n")
        w.writerow(["メールアドレス", "氏名", "分野", "形式"])
        for i in range(start, start + rows):
            w.writerow([f"member{i:06d}@example.jp", f"会員 {i}号", cells[i % len(cells)], "text" if i % 3 else "html"])
    return path


def test_import_memory_does_not_grow_with_the_file(tmp_path):
    """Python's peak allocations for 6 times the rows stay about the same (before: ~6 times)."""
    import tracemalloc

    config = load_config(write_config(tmp_path / "project", f"sqlite:///{tmp_path / 'm.db'}"))
    engine = make_engine(config.storage_url)
    upgrade(engine)
    subs.import_csv(engine, config, members_csv(tmp_path / "warm.csv", 10, start=900000))  # imports, caches
    engine.dispose()
    peaks = []
    for n, rows in enumerate((3000, 18000)):
        path = members_csv(tmp_path / f"m{n}.csv", rows, start=n * 100000)
        engine = make_engine(config.storage_url)
        upgrade(engine)
        tracemalloc.start()
        try:
            report = subs.import_csv(engine, config, path)
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
            engine.dispose()
        assert report.created == rows and report.written
    assert peaks[1] < 1.5 * peaks[0], peaks


def test_streamed_import_merges_across_batches_and_is_all_or_nothing(project, monkeypatch):
    monkeypatch.setattr(subs, "BATCH", 4)
    project("subscriber", "add", "kato.hiroshi@example.jp", "--fields", "education", "--name", "加藤 浩")
    lines = ["email,name,fields,format"]
    for i in range(12):
        lines.append(f"member{i:02d}@example.jp,会員{i},行政,html")
    lines[3] = "yamada.ryo@example.org,山田 亮,地方自治,html"             # line 4
    lines[9] = "YAMADA.RYO@example.org,,教育,text"                         # line 10: another batch
    lines[11] = "Kato.Hiroshi@Example.jp,,administration,"                  # line 12: the database's
    good = "\r\n".join(lines) + "\r\n"
    before = table(project), table(project, consents)

    broken = write(project.folder, "broken.csv", good + 'sato@example.jp,"佐藤 花子,教育\r\n')
    result = project("subscriber", "import", broken, ok=False)
    assert result.stderr.splitlines()[-1].startswith("error: broken.csv:14: malformed CSV line")
    assert (table(project), table(project, consents)) == before  # 12 good rows in 3 batches: none written

    path = write(project.folder, "members.csv", good)
    result = project("subscriber", "import", "--dry-run", path)
    assert "note: members.csv:10: yamada.ryo@example.org: merged with line 4" in result.stdout
    assert result.stdout.splitlines()[-1] == (
        f"would import {path}: 12 rows, 10 new, 1 updated, 1 merged duplicates, 0 left unsubscribed/bounced"
    )
    assert (table(project), table(project, consents)) == before

    result = project("subscriber", "import", path)
    assert result.stdout.splitlines()[-1] == (
        f"imported {path}: 12 rows, 10 new, 1 updated, 1 merged duplicates, 0 left unsubscribed/bounced"
    )
    rows = by_email(project)
    assert len(rows) == 11
    assert (rows["yamada.ryo@example.org"].fields, rows["yamada.ryo@example.org"].format,
            rows["yamada.ryo@example.org"].name) == ("local-government,education", "text", "山田 亮")
    assert (rows["kato.hiroshi@example.jp"].fields, rows["kato.hiroshi@example.jp"].name) == (
        "administration,education", "加藤 浩")
    assert count(project, consents) == 1 + 10 + 1  # add; 10 imports; 1 change


# --- export paths and the Excel flavour ---------------------------------------------------------


def test_paths_are_relative_to_the_current_folder(sqlite_project, tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    sqlite_project("subscriber", "add", "sato.hanako@example.jp", "--fields", "教育")
    assert sqlite_project("subscriber", "export", "out.csv").stdout.strip() == "exported 1 subscribers to out.csv"
    assert (elsewhere / "out.csv").read_text(encoding="utf-8").startswith("email,name,")
    assert not (sqlite_project.folder / "subscribers").exists()  # never personal data next to the code
    # and import reads the current folder too, not the project's subscribers/
    (sqlite_project.folder / "subscribers").mkdir()
    members_csv(sqlite_project.folder / "subscribers" / "members.csv", 2)
    result = sqlite_project("subscriber", "import", "members.csv", ok=False)
    assert result.stderr.strip() == "error: members.csv: no such file"
    result = sqlite_project("subscriber", "export", "no-such-folder/out.csv", ok=False)
    assert result.exit_code == 1
    assert result.stderr.strip().startswith("error: no-such-folder/out.csv: cannot write (")
    assert list(elsewhere.iterdir()) == [elsewhere / "out.csv"]


def test_subscriber_lists_are_git_ignored_except_the_sample():
    import shutil
    import subprocess

    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")

    def ignored(name: str) -> bool:
        return subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", name]).returncode == 0

    assert ignored("subscribers/export.csv") and ignored("subscribers/会員名簿.csv")
    assert not ignored("subscribers/sample.csv")


def test_excel_export_is_japanese_local_time_and_re_imports(project):
    project("subscriber", "add", "sato.hanako@example.jp", "--fields", "地方自治、教育", "--name", "佐藤 花子")
    project("subscriber", "add", "suzuki@example.com", "--fields", "行政", "--format", "text",
            "--charset", "iso-2022-jp", "--publications", "weekly", "--name", "鈴木 一郎")
    project("subscriber", "add", "ito@example.org", "--fields", "教育")
    project("subscriber", "unsubscribe", "ito@example.org")
    engine = make_engine(load_config(project.config_path).storage_url)
    with engine.begin() as conn:
        conn.execute(subscribers.update().values(created_at=datetime(2026, 3, 31, 15, 30, tzinfo=UTC)))
    engine.dispose()
    excel, plain = project.folder / "excel.csv", project.folder / "plain.csv"
    project("subscriber", "export", "--excel", excel)
    project("subscriber", "export", plain)
    rows = list(csv.reader(io.StringIO(excel.read_text(encoding="utf-8-sig"), newline="")))
    assert rows == [
        ["メールアドレス", "氏名", "分野", "形式", "文字コード", "状態", "配信誌", "登録日時"],
        ["ito@example.org", "", "education", "html", "", "unsubscribed", "", "2026-04-01 00:30:00"],
        ["sato.hanako@example.jp", "佐藤 花子", "local-government;education", "html", "", "active", "",
         "2026-04-01 00:30:00"],
        ["suzuki@example.com", "鈴木 一郎", "administration", "text", "iso-2022-jp", "active", "weekly",
         "2026-04-01 00:30:00"],
    ]
    assert plain.read_text(encoding="utf-8").splitlines()[2].endswith(",active,,2026-03-31T15:30:00+00:00")

    before = {e: (r.name, r.fields, r.format, r.charset, r.publications) for e, r in by_email(project).items()
              if r.status == "active"}
    engine = make_engine(load_config(project.config_path).storage_url)
    with engine.begin() as conn:
        conn.execute(delete(consents))
        conn.execute(delete(subscribers))
    engine.dispose()
    result = project("subscriber", "import", "--dry-run", excel)
    assert result.stderr == ""  # every column known, nothing rejected
    assert "note: excel.csv:2: ito@example.org: is unsubscribed in the file; not imported" in result.stdout
    result = project("subscriber", "import", excel)
    assert result.stdout.strip().endswith("3 rows, 2 new, 0 updated, 0 merged duplicates, 1 left unsubscribed/bounced")
    after = {e: (r.name, r.fields, r.format, r.charset, r.publications) for e, r in by_email(project).items()}
    assert after == before  # the unsubscribed reader does not come back as active
