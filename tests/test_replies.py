"""newsletter.replies: what an SMTP reply, a DSN status or a webhook status field
means, and the one rule for "this address does not work"."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from newsletter.replies import bounce_kind, classify_smtp_reply, enhanced_status, smtp_outcome


@pytest.mark.parametrize(("status", "default", "kind"), [
    ("5.1.1", "ignored", "hard"),                      # bad mailbox
    ("5.1.10", "ignored", "hard"),                     # null MX (RFC 7505)
    ("smtp; 550 5.1.2 Host unknown", "ignored", "hard"),
    ("5.7.1", "ignored", "soft"),                      # policy: says nothing about the address
    ("failed 5.2.2 mailbox full", "hard", "soft"),     # a code overrules the service's "permanent"
    ("4.4.7", "ignored", "soft"),
    ("2.0.0", "hard", "ignored"),
    ("", "hard", "hard"),                              # no code: the service's own word counts
    ("", "ignored", "ignored"),
    ("bounce  Bounced Address", "hard", "hard"),
    ("RFC 5.1.1.1", "ignored", "ignored"),             # not an enhanced code
    ("User unknown 5.1.1.", "ignored", "hard"),        # a sentence's full stop after the code
])
def test_bounce_kind(status, default, kind):
    assert bounce_kind(status, default=default) == kind


@pytest.mark.parametrize(("code", "text", "status", "bad"), [
    (550, "550 5.1.1 <taro@example.jp>: Recipient address rejected: User unknown", "permanent", True),
    (553, "553 5.1.3 Bad address syntax", "permanent", True),
    (554, "554 5.7.1 Message rejected as spam", "permanent", False),
    (550, "550 Mailbox unavailable", "permanent", False),  # no enhanced code: the message fails, the address stays
    (450, "450 5.1.1 Try again later", "transient", False),
    (552, "552 5.2.2 Mailbox full", "transient", False),
    (250, "250 2.0.0 Ok: queued as 4XYZ", "accepted", False),
])
def test_smtp_outcome(code, text, status, bad):
    assert smtp_outcome(code, text) == (status, bad)


@given(st.integers(min_value=-1, max_value=999), st.text())
def test_smtp_outcome_is_total_and_bad_only_when_permanent(code, text):
    status, bad = smtp_outcome(code, text)
    assert status == classify_smtp_reply(code, text)
    assert not bad or (status == "permanent" and enhanced_status(text).startswith("5.1."))


@given(st.text(alphabet=st.characters(blacklist_categories=("Nd",)) | st.sampled_from("0123456789. ;"),
               max_size=80),
       st.sampled_from(["hard", "ignored"]))
def test_bounce_kind_never_fails_on_any_text(text, default):
    """Diagnostic text from any server, in any language (宛先不明, 配信不能...)."""
    kind = bounce_kind(text, default=default)
    assert kind in ("hard", "soft", "ignored")
    assert bounce_kind(f"宛先不明です {text}", default=default) in ("hard", "soft", "ignored")


@given(st.integers(min_value=0, max_value=999), st.integers(min_value=0, max_value=999),
       st.text(alphabet="宛先不明配信不能のメールボックスですabc ;:<>@", max_size=30))
def test_the_subject_decides_hard_or_soft_wherever_the_code_stands(subject, detail, words):
    kind = bounce_kind(f"{words} 5.{subject}.{detail} {words}")
    assert kind == ("hard" if subject == 1 else "soft")
