"""Subscribers: ``newsletter subscriber add|import|export|list|show|set|unsubscribe|delete|consent``.

Tests about the database's behaviour run on SQLite and PostgreSQL (``project``); tests about
CSV encodings and shapes use ``sqlite_project``.
"""

from __future__ import annotations

import csv
import io
import tempfile
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
from tests.conftest import write_config


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
    path = write(sqlite_project.folder, "members.csv", "email,name\r\nito@example.com,伊藤,余分\r\n")
    [line] = sqlite_project("subscriber", "import", path, ok=False).stderr.splitlines()
    assert line == "error: members.csv:2: 3 cells but the header has 2 columns"
    assert count(sqlite_project) == 0


def test_control_characters_in_names_are_blanked(project):
    path = write(project.folder, "members.csv", "email,name\r\nito@example.com,伊\x00藤\x1b\r\n")
    project("subscriber", "import", path)
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


def test_bare_file_names_mean_the_subscribers_folder(sqlite_project, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = sqlite_project.folder / "subscribers"
    folder.mkdir()
    write(folder, "members.csv", MEMBERS.encode("cp932"))
    sqlite_project("subscriber", "import", "members.csv")
    assert count(sqlite_project) == 4
    sqlite_project("subscriber", "export", "out.csv")
    assert (folder / "out.csv").exists()


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
    assert rows[0] == ["email", "name", "fields", "format", "charset", "status", "publications", "created_at"]
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
            assert subs.export_csv(engine, path, excel=excel) == len(wanted)
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
