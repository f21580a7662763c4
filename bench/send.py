"""Benchmark: send one edition to N subscribers, against the limit of the machine
and a naive pipeline, in the same run.

    python bench/send.py --subscribers 100000
    python bench/send.py --subscribers 2000                 # what CI runs
    python bench/send.py --memory-check 20000,200000        # peak RSS of the send phase, small vs large
    python bench/send.py --provider file                    # the pipeline without SMTP
    python bench/send.py --dkim --subscribers 20000         # DKIM-signed vs unsigned, same run

Steps: a temporary project (SQLite), N made-up subscribers over all 7 field
combinations and both formats (imported with the real CSV importer), 10 queued
articles per field, one edition created (assembly + delivery plan), its variants
rendered, then sent by the real engine to a local SMTP sink in another process.

References, measured in the same run:
- **limit**: Postfix's own pair of test tools, ``smtp-source`` pushing messages of
  our average size into the same ``smtp-sink`` (Debian package ``postfix``), with
  as many sessions as we use connections;
- **naive**: jinja2 + premailer + html2text + ``EmailMessage`` per recipient over
  one smtplib connection, on a sample of recipients.

The send phase runs in a child process so that its peak RSS is its own (the
import before it holds the CSV in memory).  Prints one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import random
import resource
import shutil
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
from email.message import EmailMessage
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SURNAMES = "佐藤 鈴木 高橋 田中 伊藤 渡辺 山本 中村 小林 加藤 吉田 山田 佐々木 山口 松本 井上 木村 林 斎藤 清水".split()
GIVEN = "花子 一郎 美咲 健二 結衣 翔太 恵子 拓也 彩香 浩 直美 亮 陽菜 蓮 さくら 大翔 葵 湊 凛 悠真".split()
COMBOS = ["地方自治", "行政", "教育", "地方自治;行政", "地方自治;教育", "行政;教育", "地方自治;行政;教育"]
FIELDS = ["local-government", "administration", "education"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def smtp_sink():
    """Postfix's smtp-sink on a free loopback port."""
    exe = shutil.which("smtp-sink") or ("/usr/sbin/smtp-sink" if os.path.exists("/usr/sbin/smtp-sink") else None)
    if exe is None:
        sys.exit("bench/send.py: smtp-sink not found; install Debian's postfix package "
                 "(apt-get install postfix), which ships smtp-sink and smtp-source")
    port = free_port()
    args = [exe]
    if os.geteuid() == 0:
        args += ["-u", "nobody"]
    proc = subprocess.Popen([*args, f"127.0.0.1:{port}", "256"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    try:
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def write_project(folder: Path, provider: str, port: int | None, connections: int, dkim: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copytree(ROOT / "templates", folder / "templates")
    text = (ROOT / "config.toml").read_text(encoding="utf-8")
    start = text.index("[provider]")
    end = text.index("[[fields]]")
    if provider == "smtp":
        table = (f'[provider]\nkind = "smtp"\nhost = "127.0.0.1"\nport = {port}\ntimeout = 30\n'
                 f"connections = {connections}\nmax_batch = 100\n\n")
    else:
        table = '[provider]\nkind = "file"\npath = "var/outbox"\nmax_batch = 500\n\n'
    text = text[:start] + table + text[end:]
    text = text.replace("max_articles = 20", "max_articles = 30")  # all 10 articles of each field
    if dkim:
        from newsletter.dkim_signer import generate_key, private_pem

        text += '\n[dkim]\nselector = "bench"\nprivate_key_file = "rsa.pem"\n'
        (folder / "rsa.pem").write_bytes(private_pem(generate_key("rsa-sha256")))
        if dkim == "rsa+ed25519":
            text += 'ed25519_selector = "benched"\ned25519_private_key_file = "ed.pem"\n'
            (folder / "ed.pem").write_bytes(private_pem(generate_key("ed25519-sha256")))
    path = folder / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def write_subscribers(path: Path, n: int) -> None:
    rng = random.Random(1)
    with open(path, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["メールアドレス", "氏名", "分野", "形式"])
        for i in range(n):
            w.writerow([f"reader{i:07d}@example.jp", f"{rng.choice(SURNAMES)} {rng.choice(GIVEN)}",
                        COMBOS[i % 7], "html" if (i // 7) % 2 == 0 else "text"])


def queue_articles(engine, config) -> None:
    from newsletter import articles as arts

    sample = json.loads((ROOT / "articles" / "sample.json").read_text(encoding="utf-8"))
    items = []
    for f_i, field in enumerate(FIELDS):
        for k in range(10):
            a = sample[(f_i * 4 + k) % len(sample)]
            items.append((f"bench {field} {k}", {
                "title": f"{a['title']}（{k + 1}）", "url": f"https://news.example.jp/bench/{field}/{k}",
                "summary": a["summary"], "body": a["body"], "fields": [field], "author": a["author"],
            }))
    report = arts.import_items(engine, config, items, source="bench")
    assert report.ok, report.errors


def prepare(folder: Path, n: int, provider: str, port: int | None, connections: int, dkim: str = "") -> dict:
    from newsletter import subscribers as subs
    from newsletter.config import load_config
    from newsletter.delivery import Variants
    from newsletter.editions import creation
    from newsletter.editions.assemble import VariantKey
    from newsletter.store import editions as q
    from newsletter.store import make_engine, upgrade
    from newsletter.store.editions import load_content

    config = load_config(write_project(folder, provider, port, connections, dkim))
    engine = make_engine(config.storage_url)
    upgrade(engine)
    config.create_secret()  # as 'newsletter init' does
    csv_path = folder / "subscribers.csv"
    write_subscribers(csv_path, n)
    t = time.perf_counter()
    report = subs.import_csv(engine, config, csv_path)
    import_seconds = time.perf_counter() - t
    assert report.created == n, report
    queue_articles(engine, config)
    t = time.perf_counter()
    created = creation.create_edition(engine, config, config.publication("weekly"))
    with engine.connect() as conn:
        edition = q.get_edition(conn, created.edition_id)
        keys = {VariantKey.decode(v) for (v,) in conn.exec_driver_sql(
            "SELECT DISTINCT variant FROM deliveries WHERE edition_id = ?", (created.edition_id,))}
    variants = Variants(config, load_content(edition), edition.created_at)
    for key in sorted(keys, key=lambda k: (k.fields, k.format != "html")):
        variants.get(key)
    assemble_render = time.perf_counter() - t
    return {"config": str(config.path), "edition_id": created.edition_id, "import_seconds": import_seconds,
            "assemble_render_seconds": assemble_render, "variants": len(keys), "renders": variants.renders,
            "to_send": created.pending}


def send_phase(config_path: str, edition_id: int) -> dict:
    """Runs in a child process: send the edition, report time, size and peak RSS."""
    from newsletter.config import load_config
    from newsletter.delivery import deliver
    from newsletter.providers import open_provider
    from newsletter.store import open_engine

    config = load_config(config_path)
    engine = open_engine(config.storage_url)
    sizes: list[int] = []

    def measuring():  # each connection's provider, wrapped in the DKIM signer when [dkim] is set
        provider = open_provider(config)
        original = provider.send

        def measuring_send(batch):
            if len(sizes) < 2000:
                sizes.extend(len(m.data) for m in batch)
            return original(batch)

        provider.send = measuring_send  # type: ignore[method-assign]
        return provider

    t = time.perf_counter()
    report = deliver(engine, config, edition_id, opener=measuring)
    seconds = time.perf_counter() - t
    return {"sent": report.sent, "failed": report.failed, "send_seconds": seconds,
            "avg_message_bytes": int(sum(sizes) / max(len(sizes), 1)),
            "peak_rss_mb": peak_rss_mb()}


def peak_rss_mb() -> float:
    """This process's peak resident memory.  VmHWM, not getrusage's ru_maxrss: after
    fork+exec, ru_maxrss still counts the parent's memory at fork time, which here
    is the import phase holding the whole CSV."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_send_child(config_path: str, edition_id: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--send-phase", config_path, str(edition_id)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def limit_rate(port: int, size: int, messages: int, sessions: int) -> float:
    exe = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
    t = time.perf_counter()
    subprocess.run([exe, "-s", str(sessions), "-l", str(size), "-m", str(messages), "-f", "bench@example.jp",
                    "-t", "reader@example.jp", f"127.0.0.1:{port}"], check=True, capture_output=True)
    return messages / (time.perf_counter() - t)


def naive_rate(config_path: str, edition_id: int, port: int, sample: int) -> float:
    """The obvious pipeline: render everything for every recipient, one smtplib connection."""
    import html2text
    import jinja2
    from premailer import Premailer
    from sqlalchemy import select

    from newsletter.config import load_config
    from newsletter.editions.render import context
    from newsletter.store import editions as q
    from newsletter.store import open_engine
    from newsletter.store.editions import load_content
    from newsletter.store.tables import deliveries

    config = load_config(config_path)
    engine = open_engine(config.storage_url)
    with engine.connect() as conn:
        edition = q.get_edition(conn, edition_id)
        rows = conn.execute(select(deliveries.c.email, deliveries.c.variant).where(
            deliveries.c.edition_id == edition_id).limit(sample)).all()
    content = load_content(edition)
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(config.templates_dir)),
                             autoescape=jinja2.select_autoescape(["html", "j2"]))
    conn = smtplib.SMTP("127.0.0.1", port)
    t = time.perf_counter()
    for email_addr, variant in rows:
        fields = variant.split("|")[0].split(",")
        ctx = context(content, fields, edition.created_at)
        raw = env.get_template("digest.html.j2").render(ctx)
        html = Premailer(raw, allow_network=False, keep_style_tags=True).transform()
        conv = html2text.HTML2Text()
        text = conv.handle(raw)
        msg = EmailMessage()
        msg["From"] = f"{config.sender.name} <{config.sender.address}>"
        msg["To"] = email_addr
        msg["Subject"] = env.get_template("subject.txt.j2").render(ctx)
        msg.set_content(text)
        msg.add_alternative(html, subtype="html")
        conn.send_message(msg)
    seconds = time.perf_counter() - t
    conn.quit()
    return len(rows) / seconds


def dkim_comparison(args) -> dict:
    """The same edition sent unsigned, RSA-signed and RSA+Ed25519-signed into one sink."""
    out: dict = {"subscribers": args.subscribers, "connections": args.connections}
    with smtp_sink() as port:
        for mode in ("", "rsa", "rsa+ed25519"):
            with tempfile.TemporaryDirectory(prefix="nl-bench-") as tmp:
                prep = prepare(Path(tmp) / "p", args.subscribers, "smtp", port, args.connections, mode)
                sent = run_send_child(prep["config"], prep["edition_id"])
                assert sent["sent"] == prep["to_send"] and sent["failed"] == 0, sent
                out[f"{mode or 'unsigned'}_messages_per_s"] = round(sent["sent"] / sent["send_seconds"], 1)
                if not mode:
                    out["avg_message_bytes"] = sent["avg_message_bytes"]
    out["sign_seconds_per_message"] = sign_cost(out["avg_message_bytes"])
    base = out["unsigned_messages_per_s"]
    out["rsa_ratio_to_unsigned"] = round(out["rsa_messages_per_s"] / base, 3)
    out["rsa+ed25519_ratio_to_unsigned"] = round(out["rsa+ed25519_messages_per_s"] / base, 3)
    return out


def sign_cost(size: int, n: int = 300) -> dict:
    """Seconds per message for signing alone (one thread), per key set."""
    from newsletter.dkim_signer import DkimKey, Signer, generate_key

    body = ("ニュース本文の一行です。" * 6 + "\r\n").encode()
    message = (b"From: a@news.example.jp\r\nTo: b@example.jp\r\nSubject: x\r\n\r\n"
               + body * max(1, size // len(body)))
    rsa = DkimKey("s", "rsa-sha256", generate_key("rsa-sha256"))
    ed = DkimKey("e", "ed25519-sha256", generate_key("ed25519-sha256"))
    out = {}
    for name, keys in (("rsa", [rsa]), ("rsa+ed25519", [rsa, ed])):
        signer = Signer("news.example.jp", keys)
        t = time.perf_counter()
        for _ in range(n):
            signer.sign(message)
        out[name] = round((time.perf_counter() - t) / n, 6)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--subscribers", type=int, default=100_000)
    ap.add_argument("--provider", choices=["smtp", "file"], default="smtp")
    ap.add_argument("--connections", type=int, default=2)
    ap.add_argument("--naive-sample", type=int, default=300)
    ap.add_argument("--memory-check", metavar="SMALL,LARGE", help="compare peak RSS of the send phase")
    ap.add_argument("--dkim", action="store_true", help="compare DKIM-signed sends with unsigned ones")
    ap.add_argument("--send-phase", nargs=2, metavar=("CONFIG", "EDITION"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    import logging

    logging.disable(logging.INFO)

    if args.send_phase:
        print(json.dumps(send_phase(args.send_phase[0], int(args.send_phase[1]))))
        return

    if args.dkim:
        print(json.dumps(dkim_comparison(args), indent=2))
        return

    if args.memory_check:
        small, large = (int(x) for x in args.memory_check.split(","))
        results = {}
        with smtp_sink() as port:
            for n in (small, large):
                with tempfile.TemporaryDirectory(prefix="nl-bench-") as tmp:
                    prep = prepare(Path(tmp) / "p", n, args.provider, port, args.connections)
                    results[n] = run_send_child(prep["config"], prep["edition_id"])
        ratio = results[large]["peak_rss_mb"] / results[small]["peak_rss_mb"]
        print(json.dumps({"memory_check": {str(k): v for k, v in results.items()},
                          "peak_rss_ratio": round(ratio, 3), "flat_within_15pct": ratio <= 1.15}, indent=2))
        return

    out: dict = {"subscribers": args.subscribers, "provider": args.provider, "connections": args.connections}
    with tempfile.TemporaryDirectory(prefix="nl-bench-") as tmp, (
        smtp_sink() if args.provider == "smtp" else contextlib.nullcontext(None)
    ) as port:
        prep = prepare(Path(tmp) / "p", args.subscribers, args.provider, port, args.connections)
        sent = run_send_child(prep["config"], prep["edition_id"])
        assert sent["sent"] == prep["to_send"] and sent["failed"] == 0, sent
        out.update({k: prep[k] for k in ("import_seconds", "assemble_render_seconds", "variants", "renders")})
        out.update(sent)
        out["messages_per_s"] = sent["sent"] / sent["send_seconds"]
        if args.provider == "smtp":
            limit = limit_rate(port, sent["avg_message_bytes"], min(max(args.subscribers, 2000), 20000),
                               args.connections)
            naive = naive_rate(prep["config"], prep["edition_id"], port, min(args.naive_sample, args.subscribers))
            out["limit_messages_per_s"] = limit
            out["naive_messages_per_s"] = naive
            out["ratio_to_limit"] = out["messages_per_s"] / limit
            out["speedup_vs_naive"] = out["messages_per_s"] / naive
    for k, v in list(out.items()):
        if isinstance(v, float):
            out[k] = round(v, 3)
    print(json.dumps(out, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
