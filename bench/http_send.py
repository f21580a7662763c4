"""Benchmark: the HTTP providers against their local contract servers.

    python bench/http_send.py --recipients 2000
    python bench/http_send.py --recipients 5000 --providers sendgrid,postmark

Composes N messages once (three variants: two HTML, one text-only), starts each
service's contract server from tests/http_servers.py on 127.0.0.1, and times
``provider.send`` over the whole list in chunks of the provider's ``max_batch``,
as the delivery engine hands them over:

- ``batched``: the provider as configured by default (SendGrid 1,000
  personalizations a request, Mailgun 1,000 recipients with recipient-variables,
  Postmark 500 messages a batch);
- ``per_message``: the baseline in the same run, one request per message
  (``max_batch = 1``; for Mailgun ``mode = "mime"``, its per-message endpoint).

SES sends one request per message by design (SendEmail with raw content), so it
has only the per-message figure.  Client and server share this process and its
GIL, so absolute numbers are lower than against a real service would be for the
batched runs and higher for the per-message ones (no network latency); the ratio
is the point.  Prints JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from newsletter.editions.compose import Recipient, Sending, compose  # noqa: E402
from newsletter.editions.render import Rendered  # noqa: E402
from newsletter.interfaces import OutgoingMessage  # noqa: E402
from newsletter.links import Placeholders  # noqa: E402
from newsletter.providers import load_provider  # noqa: E402
from tests.http_servers import MailgunServer, PostmarkServer, SendGridServer, SESServer  # noqa: E402

SENDING = Sending(
    edition_id=1, edition_stamp=1796079600, publication_slug="weekly", publication_title="週刊 地方行政ニュース",
    timezone="Asia/Tokyo", from_name="地方行政ニュース編集部", from_address="magazine@news.example.jp",
    reply_to=None, envelope_from="magazine@news.example.jp", base_url="https://news.example.jp",
    domain="news.example.jp", unsubscribe_mailto=None, key=b"bench-key-0123456789abcdef012345",
)
ARTICLE = ("<h2>■ 地方自治</h2><p>東雲県、「第2次DX推進計画」素案を公表。県の行政手続の9割をオンライン化へ。"
           "12月19日までパブリックコメントを募集する。</p>")


def variants() -> list[Rendered]:
    marks = Placeholders.new()
    GREETING, UNSUBSCRIBE_URL, PREFERENCES_URL = marks.all()  # noqa: N806
    body = ARTICLE * 12
    html = (f"<html><body><p>{GREETING}</p>{body}<p><a href=\"{UNSUBSCRIBE_URL}\">配信停止</a> "
            f"<a href=\"{PREFERENCES_URL}\">配信設定</a></p></body></html>")
    text = f"{GREETING}\n\n" + "東雲県、「第2次DX推進計画」素案を公表。\n" * 40 + f"\n配信停止: {UNSUBSCRIBE_URL}\n"
    a = Rendered("【週刊 地方行政ニュース】第1号", html, text, (1,), "ja", placeholders=marks)
    b = dataclasses.replace(a, html=html.replace("地方自治", "教育"), article_ids=(2,))
    c = Rendered(a.subject, None, text, (1,), "ja", placeholders=marks)
    return [a, b, c]


def messages(n: int) -> list[OutgoingMessage]:
    rendered = variants()
    now = datetime.now(UTC)
    return [compose(rendered[i % 3], Recipient(i, i, f"reader{i:06d}@example.jp", f"読者 {i}"), SENDING, now=now)
            for i in range(1, n + 1)]


def setup(kind: str):
    if kind == "sendgrid":
        server = SendGridServer()
        os.environ["BENCH_KEY"] = server.api_key
        options = {"api_key_env": "BENCH_KEY"}
    elif kind == "mailgun":
        server = MailgunServer()
        os.environ["BENCH_KEY"] = server.api_key
        options = {"api_key_env": "BENCH_KEY", "domain": server.domain}
    elif kind == "postmark":
        server = PostmarkServer()
        os.environ["BENCH_KEY"] = server.token
        options = {"api_key_env": "BENCH_KEY"}
    else:
        server = SESServer()
        os.environ["BENCH_ID"], os.environ["BENCH_SECRET"] = server.access_key, server.secret_key
        options = {"access_key_id_env": "BENCH_ID", "secret_access_key_env": "BENCH_SECRET", "region": server.region}
    server.render = False
    server.keep_bodies = False
    return server, options


def run(kind: str, options: dict, server, batch: list[OutgoingMessage]) -> dict:
    server.clear()
    provider = load_provider(kind, {**options, "base_url": server.base_url}, ROOT)
    step = provider.max_batch
    started = time.perf_counter()
    accepted = 0
    for i in range(0, len(batch), step):
        accepted += sum(r.status == "accepted" for r in provider.send(batch[i:i + step]))
    seconds = time.perf_counter() - started
    provider.close()
    if accepted != len(batch):
        raise SystemExit(f"{kind}: only {accepted} of {len(batch)} accepted")
    return {"requests": server.requests, "seconds": round(seconds, 3),
            "recipients_per_s": round(len(batch) / seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipients", type=int, default=2000)
    parser.add_argument("--providers", default="sendgrid,mailgun,postmark,ses")
    args = parser.parse_args()
    batch = messages(args.recipients)
    out: dict = {"recipients": args.recipients, "variants": 3,
                 "mean_message_bytes": round(sum(len(m.data) for m in batch) / len(batch)), "providers": {}}
    for kind in args.providers.split(","):
        server, options = setup(kind)
        with server:
            result: dict = {}
            if kind != "ses":
                result["batched"] = run(kind, options, server, batch)
            per_message = {"mode": "mime"} if kind == "mailgun" else {"max_batch": 1}
            result["per_message"] = run(kind, {**options, **per_message}, server, batch)
            if "batched" in result:
                result["speedup"] = round(result["batched"]["recipients_per_s"]
                                          / result["per_message"]["recipients_per_s"], 1)
            out["providers"][kind] = result
    print(json.dumps(out, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
