"""Addresses: the one validator/normaliser (``subscribers.normalize_email``) and
every door it guards — ``subscriber add``, import, the web sign-up and
``edition send --test-to``.

A local part that is not ASCII (``すずき@example.jp``) is refused at the door with
one line; what a Japanese IME types by mistake (full-width ``＠``, ``．`` and
letters) is folded to ASCII with a note; IDN domains stay allowed.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from newsletter import subscribers as subs
from newsletter.config import load_config
from newsletter.editions.compose import ascii_address
from newsletter.store import make_engine
from newsletter.store.tables import subscribers
from tests.conftest import CLI, ROOT, write_config
from tests.test_web import make_site, sign_up

NON_ASCII_LOCAL = ["すずき@example.jp", "ｽｽﾞｷ@example.jp", "鈴木.一郎@example.jp", "すずき＠例え.jp"]
FULL_WIDTH = [
    ("ｈａｎａｋｏ＠ｅｘａｍｐｌｅ．ｊｐ", "hanako@example.jp"),
    ("hanako＠example.jp", "hanako@example.jp"),
    ("Ｓａｔｏ．Ｈａｎａｋｏ＠Ｅｘａｍｐｌｅ．ＪＰ", "sato.hanako@example.jp"),
    ("ｕｓｅｒ＠例え．ｊｐ", "user@例え.jp"),
]


def stored(cli: CLI) -> list[tuple[str, str, str]]:
    engine = make_engine(load_config(cli.config_path).storage_url)
    try:
        with engine.connect() as conn:
            return [(r.email, r.fields, r.format) for r in conn.execute(select(subscribers).order_by(subscribers.c.id))]
    finally:
        engine.dispose()


# --- the normaliser itself ------------------------------------------------------------------


@pytest.mark.parametrize("address", NON_ASCII_LOCAL)
def test_a_non_ascii_local_part_is_refused(address):
    with pytest.raises(ValueError, match="the part before @ must be ASCII"):
        subs.normalize_email(address)


@pytest.mark.parametrize(("typed", "address"), FULL_WIDTH)
def test_full_width_input_is_folded_with_a_note(typed, address):
    notes: list[str] = []
    assert subs.normalize_email(typed, notes) == address
    assert notes == ["normalised full-width characters in the address"]
    notes.clear()
    assert subs.normalize_email(address, notes) == address and notes == []


# What people type: ASCII address characters, their full-width twins, Japanese
# letters, IDN-able domain characters and some noise.
ADDRESS_CHARS = (
    "abcxyzABCXYZ0189.-_+@"
    "ａｂｃｘｙｚＡＢＣＸＹＺ０１８９．－＿＋＠"
    "すずきｽｽﾞｷ鈴木例え市役所"
    " 　\"'<>()[],;:\\!#$%&*/=?^`{|}~"
)


@settings(max_examples=400, deadline=None)
@given(st.one_of(
    st.text(alphabet=ADDRESS_CHARS, max_size=40),
    st.builds(lambda local, at, domain: f"{local}{at}{domain}",
              st.text(alphabet=ADDRESS_CHARS, min_size=1, max_size=12), st.sampled_from(["@", "＠"]),
              st.sampled_from(["example.jp", "ｅｘａｍｐｌｅ．ｊｐ", "例え.jp", "市役所．jp", "xn--r8jz45g.jp"])),
    st.text(max_size=30),
))
def test_the_normaliser_is_idempotent_and_only_yields_deliverable_addresses(text):
    try:
        address = subs.normalize_email(text)
    except ValueError as exc:
        assert "\n" not in str(exc)  # one line, for the CLI and the import report
        return
    assert subs.normalize_email(address) == address
    local, _, _domain = address.rpartition("@")
    assert local.isascii() and local
    # what every provider is given (SMTP RCPT TO, the To header, the HTTP APIs): pure ASCII
    assert ascii_address(address).isascii()


# --- the doors ------------------------------------------------------------------------------


@pytest.mark.parametrize("address", NON_ASCII_LOCAL[:2])
def test_subscriber_add_refuses_a_non_ascii_local_part(project, address):
    result = project("subscriber", "add", address, "--fields", "education", ok=False)
    assert result.exit_code == 1
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: invalid email address '{address}': the part before @ must be ASCII")
    assert stored(project) == []


def test_subscriber_add_folds_full_width_input(project):
    result = project("subscriber", "add", "ｈａｎａｋｏ＠ｅｘａｍｐｌｅ．ｊｐ", "--fields", "教育")
    assert result.stdout.strip() == "created hanako@example.jp (education, html)"
    # the same person typed another way is the same subscriber
    assert project("subscriber", "add", "Hanako@example.jp", "--fields", "行政").stdout.startswith("updated")
    assert stored(project) == [("hanako@example.jp", "administration,education", "html")]


def test_import_refuses_non_ascii_local_parts_and_normalises_full_width(project):
    text = (
        "メールアドレス,氏名,分野,形式\r\n"
        "sato@example.jp,佐藤 花子,教育,html\r\n"
        "すずき@example.jp,鈴木 一郎,行政,text\r\n"
        "ｽｽﾞｷ@example.jp,鈴木 一郎,行政,text\r\n"
        "ｔａｎａｋａ＠ｅｘａｍｐｌｅ．ｊｐ,田中 健二,地方自治,ＨＴＭＬ\r\n"
        "ito@example.org,伊藤 結衣,教育,ﾃｷｽﾄ\r\n"
        "kato@例え.jp,加藤 浩,教育,ＴＥＸＴ\r\n"
    )
    path = project.folder / "members.csv"
    path.write_bytes(text.encode("utf-8"))
    result = project("subscriber", "import", path, ok=False)
    assert result.exit_code == 1
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("error: ")]
    assert [e.split(": ")[1] for e in errors] == ["members.csv:3", "members.csv:4"]
    assert all("the part before @ must be ASCII" in e for e in errors)
    notes = [ln for ln in result.stdout.splitlines() if ln.startswith("note: ")]
    assert notes == [
        "note: members.csv:5: tanaka@example.jp: normalised full-width characters in the address",
        "note: members.csv:5: tanaka@example.jp: normalised full-width characters in the format",
        "note: members.csv:6: ito@example.org: normalised full-width characters in the format",
        "note: members.csv:7: kato@例え.jp: normalised full-width characters in the format",
    ]
    assert result.stdout.splitlines()[-1].endswith("4 new, 0 updated, 0 merged duplicates, "
                                                   "0 left unsubscribed/bounced, 2 rejected")
    assert sorted(stored(project)) == [
        ("ito@example.org", "education", "text"),
        ("kato@例え.jp", "education", "text"),
        ("sato@example.jp", "education", "html"),
        ("tanaka@example.jp", "local-government", "html"),
    ]


def test_web_sign_up_refuses_a_non_ascii_local_part_and_folds_full_width(tmp_path):
    site = make_site(tmp_path, f"sqlite:///{tmp_path / 'project' / 'var' / 'newsletter.db'}")
    for address in NON_ASCII_LOCAL[:2]:
        res = sign_up(site, address)
        assert res.status_code == 400
        assert "メールアドレスの形式が正しくありません" in res.text
    with site.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(subscribers)).scalar_one() == 0
    assert site.mails() == []

    res = sign_up(site, "ｈａｎａｋｏ＠ｅｘａｍｐｌｅ．ｊｐ")
    assert res.status_code == 200, res.text
    assert site.subscriber("hanako@example.jp").status == "pending"
    assert site.last_mail("hanako@example.jp")  # the confirmation goes to the folded address


def smtp_project(tmp_path, server) -> CLI:
    provider = (f'[provider]\nkind = "smtp"\nhost = "{server.host}"\nport = {server.port}\n'
                'security = "none"\ntimeout = 10\n')
    cli = CLI(write_config(tmp_path / "project", f"sqlite:///{tmp_path / 'db.sqlite'}", provider=provider))
    cli("init")
    cli("article", "import", ROOT / "articles" / "sample.json")
    return cli


def test_test_send_folds_full_width_and_refuses_non_ascii_in_one_line(tmp_path, smtp_server):
    cli = smtp_project(tmp_path, smtp_server)
    res = cli("edition", "send", "weekly", "--test-to", "editor＠example.jp", "--fields", "education")
    assert "test message to editor@example.jp: accepted" in res.stdout
    [msg] = smtp_server.messages
    assert msg.rcpt_tos == ("editor@example.jp",)

    res = cli("edition", "send", "weekly", "--test-to", "へんしゅう@example.jp", ok=False)
    assert res.exit_code == 1
    [line] = res.stderr.splitlines()
    assert line.startswith("error: --test-to: invalid email address 'へんしゅう@example.jp': the part before @")
    assert len(smtp_server.messages) == 1


def test_an_address_stored_before_the_rule_can_still_be_found(project):
    """Databases from before hold such rows: an operator must still be able to see and change them."""
    from newsletter.store import subscribers as q

    engine = make_engine(load_config(project.config_path).storage_url)
    with engine.begin() as conn:
        q.insert_many(conn, [{"email": "すずき@example.jp", "name": "", "fields": "education", "format": "html",
                              "status": "active"}])
    engine.dispose()
    assert "すずき@example.jp" in project("subscriber", "show", "すずき@example.jp").stdout
    result = project("subscriber", "set", "すずき@example.jp", "--name", "鈴木 一郎")
    assert result.stdout.strip() == "すずき@example.jp: name=鈴木 一郎"
    # but nothing new is stored in that form
    assert project("subscriber", "add", "すずき@example.jp", "--fields", "教育", ok=False).exit_code == 1
