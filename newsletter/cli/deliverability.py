"""``newsletter doctor`` and ``newsletter dkim keygen``: getting the mail delivered."""

from __future__ import annotations

import os
from pathlib import Path

import click

from .. import doctor as doc
from ..dkim_signer import DkimKey, generate_key, private_pem
from ..errors import InputError
from . import App, main, pass_app


@main.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="One JSON document instead of lines.")
@click.option("--nameserver", "nameservers", multiple=True, metavar="ADDR[:PORT]",
              help="Ask this DNS server instead of the system's (repeatable).")
@click.option("--timeout", type=click.FloatRange(0.1, 60), default=3.0, show_default=True,
              help="Seconds per DNS query.")
@pass_app
def doctor(app: App, as_json: bool, nameservers: tuple[str, ...], timeout: float) -> None:
    """Check SPF, DKIM, DMARC, alignment, reverse DNS and one-click unsubscribe for the sender.

    One line per check (✓ passes, ✗ fails, ? cannot tell), with the fix.  Exit
    code 1 when a requirement of the mailbox providers' bulk-sender rules fails.
    Changes nothing."""
    for ns in nameservers:
        try:
            doc._host_port(ns)
        except ValueError:
            raise InputError(f"--nameserver: not an address[:port]: {ns!r}") from None
    checks = doc.diagnose(app.config, nameservers, timeout=timeout)
    if as_json:
        click.echo(doc.as_json(checks))
    else:
        for check in checks:
            click.echo(doc.format_line(check))
        bad = doc.failing(checks)
        ja = app.config.site.language != "en"
        if bad:
            click.echo(f"{len(bad)} 件の必須項目が満たされていません" if ja else
                       f"{len(bad)} bulk-sender requirement(s) not met", err=True)
        else:
            click.echo("必須項目はすべて満たされています（? は確認できなかった項目）" if ja else
                       "every bulk-sender requirement that could be checked is met")
    if doc.failing(checks):
        raise SystemExit(1)


@main.group()
def dkim() -> None:
    """DKIM keys (signing is configured under [dkim] in config.toml)."""


@dkim.command("keygen")
@click.option("--selector", required=True, help="The selector: the key is published at SELECTOR._domainkey.DOMAIN.")
@click.option("--domain", help="The signing domain (default: [dkim] domain, else the sender address's domain).")
@click.option("--ed25519", is_flag=True, help="An Ed25519 key (to add alongside the RSA one) instead of RSA 2048.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the private key (default: var/dkim beside config.toml; keep it out of git).")
@pass_app
def keygen(app: App, selector: str, domain: str | None, ed25519: bool, out_dir: Path | None) -> None:
    """Make a key pair, write the private key (mode 0600) and print the DNS record to publish."""
    from ..config import _SELECTOR_RE

    if not _SELECTOR_RE.match(selector):
        raise InputError(f"--selector: not a DNS label: {selector!r}")
    config = app.config
    domain = (domain or (config.dkim.domain if config.dkim else config.sender.address.rpartition("@")[2])).lower()
    algorithm = "ed25519-sha256" if ed25519 else "rsa-sha256"
    folder = out_dir or config.base_dir / "var" / "dkim"
    path = folder / f"{selector}.{'ed25519' if ed25519 else 'rsa'}.pem"
    if path.exists():
        raise InputError(f"{path}: already exists; choose another selector (keys are rotated by selector)")
    key = generate_key(algorithm)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise InputError(f"{path}: cannot write: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as fh:
        fh.write(private_pem(key))
    record = DkimKey(selector, algorithm, key).public_record()
    quoted = " ".join(f'"{record[i:i + 255]}"' for i in range(0, len(record), 255))
    prefix = "ed25519_" if ed25519 else ""
    ja = config.site.language != "en"
    click.echo(("秘密鍵: " if ja else "private key: ") + str(path))
    click.echo("DNS に公開する TXT レコード:" if ja else "publish this TXT record:")
    click.echo(f"{selector}._domainkey.{domain}. IN TXT {quoted}")
    click.echo("config.toml:" if ja else "then in config.toml:")
    click.echo("[dkim]")
    click.echo(f'domain = "{domain}"')
    click.echo(f'{prefix}selector = "{selector}"')
    click.echo(f'{prefix}private_key_env = "NEWSLETTER_DKIM_{"ED25519_" if ed25519 else ""}KEY"'
               f'   # export NEWSLETTER_DKIM_{"ED25519_" if ed25519 else ""}KEY="$(cat {path})"')
