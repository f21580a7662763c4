"""``newsletter doctor``: does the sender's DNS let the mail through?

Since 2024 Gmail and Yahoo refuse or spam-folder bulk mail that is not
authenticated, and ドコモメール drops mail that fails DMARC.  This module looks
the records up and says, one line per check, what is missing and how to fix it,
in the site's language.  It never changes anything.

The checks (``required`` ones are the mailbox providers' bulk-sender rules; a
failing one makes ``doctor`` exit 1 and, for large Gmail/Yahoo audiences,
stops ``edition send`` — see :func:`preflight_findings`):

=============  =========  ===================================================
spf            required   the envelope (bounce) domain has exactly one SPF
                          record, and it authorises where the mail leaves
                          from: the SMTP host's addresses, or the HTTP
                          provider's ``include:``
dkim           required   each configured selector's TXT record is published
                          and holds the public half of the configured key; no
                          ``[dkim]`` with a provider that sends our own bytes
                          (smtp, file) is a failure
dmarc          required   a DMARC record for the From domain (or its
                          organisational domain), with its policy
alignment      required   DKIM ``d=`` or the SPF domain matches the From
                          domain (relaxed: same organisational domain;
                          strict when ``adkim``/``aspf`` say ``s``)
one-click      required   List-Unsubscribe-Post goes out (always) and the
                          unsubscribe URL is https (RFC 8058)
ptr            required   for an SMTP relay: each address of the host has a
                          reverse name that resolves back to it
mx             advice     the bounce domain accepts mail (else bounces are
                          lost)
=============  =========  ===================================================

A check that cannot be made (a provider that signs for us, an SPF term we
do not evaluate) is ``ok = None``: said, never counted as passing or failing.  DNS goes through
dnspython; ``nameservers`` (``--nameserver``) points it at another server, as
the tests do.  Offline — the root zone itself does not answer — the DNS
checks give way to one ``dns`` line that says so, instead of reporting every
record as missing.

The SPF evaluation here is deliberately small (RFC 7208 mechanisms ip4, ip6,
a, mx, include, redirect and all, with the 10-lookup limit); ``exists`` and
``ptr`` make the verdict "cannot tell".  The organisational domain comes from
the Public Suffix List shipped in the ``publicsuffixlist`` package (so
``city.chiyoda.lg.jp`` → ``chiyoda.lg.jp``).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import dns.exception
import dns.name
import dns.resolver
import dns.reversename

from .config import Config

# Where each HTTP provider's mail leaves from, as its documentation tells customers to
# write it into SPF.
PROVIDER_SPF_INCLUDES = {
    "sendgrid": ("sendgrid.net",),
    "mailgun": ("mailgun.org",),
    "postmark": ("spf.mtasv.net",),
    "ses": ("amazonses.com",),
}
# Providers that build the message themselves and sign it with the service's own
# domain authentication (CNAME records in the service's console).
SIGNED_BY_PROVIDER = ("sendgrid", "postmark", "mailgun", "ses")
SPF_LOOKUP_LIMIT = 10


class Offline(Exception):
    """DNS does not answer at all (not even the root zone)."""


@dataclass(frozen=True)
class Check:
    code: str
    ok: bool | None  # None: could not be checked
    required: bool
    message: str
    fix: str = ""

    @property
    def mark(self) -> str:
        return {True: "✓", False: "✗", None: "?"}[self.ok]


# --------------------------------------------------------------------------- DNS


class DNS:
    """Just the look-ups the doctor needs; ``None`` for "no such record"."""

    def __init__(self, nameservers: Sequence[str] = (), timeout: float = 3.0):
        self.resolver = dns.resolver.Resolver(configure=not nameservers)
        if nameservers:
            addrs, port = [], 53
            for ns in nameservers:
                host, port = _host_port(ns)
                addrs.append(host)
            self.resolver.nameservers = addrs
            self.resolver.port = port
        self.resolver.lifetime = timeout
        self.resolver.timeout = timeout
        self._online: bool | None = None

    def online(self) -> bool:
        if self._online is None:
            try:
                self.resolver.resolve(dns.name.root, "NS")
                self._online = True
            except (dns.exception.DNSException, OSError):
                self._online = False
        return self._online

    def _query(self, name: str, rdtype: str) -> list[Any] | None:
        try:
            return list(self.resolver.resolve(name, rdtype))
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return None
        except (dns.exception.DNSException, OSError) as exc:
            raise Offline(f"{name} {rdtype}: {exc}") from None

    def txt(self, name: str) -> list[str]:
        rows = self._query(name, "TXT") or []
        return [b"".join(r.strings).decode("utf-8", "replace") for r in rows]

    def addresses(self, name: str) -> list[str]:
        out: list[str] = []
        for rdtype in ("A", "AAAA"):
            out += [r.address for r in self._query(name, rdtype) or []]
        return out

    def mx(self, name: str) -> list[str]:
        return [str(r.exchange).rstrip(".") for r in self._query(name, "MX") or []]

    def ptr(self, address: str) -> list[str]:
        return [str(r.target).rstrip(".") for r in self._query(str(dns.reversename.from_address(address)), "PTR") or []]


def _host_port(text: str) -> tuple[str, int]:
    text = text.strip()
    if text.startswith("["):  # [::1]:5353
        host, _, port = text[1:].partition("]")
        return host, int(port.lstrip(":") or 53)
    if text.count(":") == 1:
        host, port = text.split(":")
        return host, int(port)
    return text, 53


# --------------------------------------------------------------------------- record parsing


def tags(record: str) -> dict[str, str]:
    """``v=DKIM1; k=rsa; p=...`` → {"v": "DKIM1", "k": "rsa", "p": "..."} (whitespace inside values removed)."""
    out: dict[str, str] = {}
    for part in record.split(";"):
        name, sep, value = part.partition("=")
        if sep:
            out[name.strip().lower()] = "".join(value.split())
    return out


def org_domain(domain: str) -> str:
    from publicsuffixlist import PublicSuffixList

    return _psl(PublicSuffixList).privatesuffix(domain.lower().rstrip(".")) or domain.lower()


_PSL = None


def _psl(factory):
    global _PSL
    if _PSL is None:
        _PSL = factory()
    return _PSL


def aligned(a: str, b: str, strict: bool) -> bool:
    a, b = a.lower().rstrip("."), b.lower().rstrip(".")
    return a == b if strict else org_domain(a) == org_domain(b)


# --------------------------------------------------------------------------- SPF


class _SPF:
    """Evaluates one address against a domain's SPF: "pass", "fail", "softfail",
    "neutral", "none", "permerror" or "unknown" (a mechanism we do not evaluate)."""

    def __init__(self, resolver: DNS):
        self.dns = resolver
        self.lookups = 0

    def record(self, domain: str) -> list[str]:
        return [t for t in self.dns.txt(domain) if t.lower().startswith("v=spf1") and
                (len(t) == 6 or t[6] == " ")]

    def check(self, ip: str, domain: str) -> str:
        records = self.record(domain)
        if not records:
            return "none"
        if len(records) > 1:
            return "permerror"
        address = ipaddress.ip_address(ip)
        redirect = None
        for term in records[0].split()[1:]:
            if term.lower().startswith("redirect="):
                redirect = term.split("=", 1)[1]
                continue
            if "=" in term.split(":", 1)[0]:
                continue  # exp= and unknown modifiers
            qualifier = "+"
            if term[0] in "+-~?":
                qualifier, term = term[0], term[1:]
            matched = self._mechanism(term, address, domain)
            if matched in ("unknown", "permerror"):
                return matched
            if matched:
                return {"+": "pass", "-": "fail", "~": "softfail", "?": "neutral"}[qualifier]
        if redirect:
            self._count()
            return self.check(ip, redirect)
        return "neutral"

    def _count(self) -> None:
        self.lookups += 1
        if self.lookups > SPF_LOOKUP_LIMIT:
            raise _TooManyLookups()

    def _mechanism(self, term: str, address, domain: str):
        name, _, arg = term.partition(":")
        name = name.lower()
        arg, _, cidr = arg.partition("/") if name in ("a", "mx") else (arg, "", "")
        if name == "all":
            return True
        if name in ("ip4", "ip6"):
            try:
                return address in ipaddress.ip_network(arg, strict=False)
            except ValueError:
                return "permerror"
        if name == "include":
            self._count()
            result = self.check(str(address), arg)
            if result in ("none", "permerror"):
                return "permerror"
            return result == "pass" or ("unknown" if result == "unknown" else False)
        if name in ("a", "mx"):
            self._count()
            hosts = [arg or domain] if name == "a" else self.dns.mx(arg or domain)
            for host in hosts:
                for a in self.dns.addresses(host):
                    net = ipaddress.ip_network(f"{a}/{cidr}" if cidr and ipaddress.ip_address(a).version == 4
                                               else a, strict=False)
                    if address in net:
                        return True
            return False
        return "unknown"  # exists, ptr, macros

    def includes(self, domain: str, wanted: Iterable[str]) -> bool:
        """Whether ``domain``'s SPF reaches one of ``wanted`` through include:/redirect= chains."""
        wanted = {w.lower() for w in wanted}
        seen: set[str] = set()
        todo = [domain]
        while todo and len(seen) <= SPF_LOOKUP_LIMIT:
            d = todo.pop()
            if d in seen:
                continue
            seen.add(d)
            for record in self.record(d):
                for term in record.split()[1:]:
                    t = term.lstrip("+-~?").lower()
                    if t.startswith("include:") or t.startswith("redirect="):
                        target = t.split(":", 1)[1] if t.startswith("include:") else t.split("=", 1)[1]
                        if target in wanted:
                            return True
                        todo.append(target)
        return False


class _TooManyLookups(Exception):
    pass


# --------------------------------------------------------------------------- the checks


_TEXT = {
    "ja": {
        "offline": "DNS に到達できないため確認できません（オフライン）",
        "offline_fix": "ネットワークにつながる端末で、または --nameserver を指定して再実行してください",
        "spf_none": "SPF レコードがありません（{domain}）",
        "spf_none_fix": "{domain} の TXT に SPF を追加してください。例: \"v=spf1 {example} -all\"",
        "spf_many": "SPF レコードが {n} 件あります（{domain}）。1 件でなければ無効です",
        "spf_many_fix": "1 件の \"v=spf1 …\" にまとめてください",
        "spf_pass": "SPF は {what} を許可しています（{domain}）",
        "spf_fail": "SPF が {what} を許可していません（{domain}、結果 {result}）",
        "spf_fail_fix": "{domain} の SPF に {example} を加えてください",
        "spf_unknown": "SPF に評価できない記述（exists/ptr/マクロ）があり、判定できません（{domain}）",
        "spf_file": "SPF レコードはあります（{domain}）。file 出力のため送信元は確認していません",
        "spf_limit": "SPF の DNS 参照が 10 回を超えます（{domain}）。受信側では無効になります",
        "spf_limit_fix": "include を減らしてください",
        "dkim_none": "DKIM 署名が設定されていません（{kind} は署名しません）",
        "dkim_none_fix": "newsletter dkim keygen --selector S で鍵を作り、表示された TXT レコードを公開し、"
                         "config.toml の [dkim] に domain・selector・private_key_env を設定してください",
        "dkim_provider": "DKIM 署名は {kind} が行います（ドメイン認証の CNAME を {kind} の管理画面で確認してください）",
        "dkim_missing": "DKIM の公開鍵がありません（{name} の TXT）",
        "dkim_missing_fix": "{name} に TXT \"{record}\" を公開してください",
        "dkim_mismatch": "DKIM の公開鍵が設定の秘密鍵と一致しません（{name}）",
        "dkim_mismatch_fix": "{name} の TXT を \"{record}\" に更新するか、正しい秘密鍵を設定してください",
        "dkim_ok": "DKIM の公開鍵は設定の秘密鍵と一致しています（{name}）",
        "dmarc_none": "DMARC レコードがありません（_dmarc.{domain}）",
        "dmarc_none_fix": "_dmarc.{domain} に TXT \"v=DMARC1; p=none; rua=mailto:{rua}\" を公開し、"
                          "様子を見て p=quarantine にしてください",
        "dmarc_ok": "DMARC レコードがあります（{name}、ポリシー p={policy}）",
        "dmarc_bad": "DMARC レコードが不正です（{name}: {record}）",
        "dmarc_bad_fix": "\"v=DMARC1; p=none\" の形で書き直してください",
        "align_ok": "From ドメイン {from_domain} と {which} が一致しています（DMARC アライメント）",
        "align_fail": "From ドメイン {from_domain} が DKIM の d={dkim}・SPF の {spf} のどちらとも一致しません",
        "align_fail_fix": "[dkim] domain か [sender] bounce_address のドメインを、"
                          "{from_domain} と同じ組織ドメインにしてください",
        "oneclick_ok": "ワンクリック配信停止（RFC 8058）: List-Unsubscribe-Post を付け、URL は https です",
        "oneclick_fail": "配信停止 URL が https ではありません（{url}）。Gmail はワンクリック配信停止と認めません",
        "oneclick_fix": "[site] base_url を https:// にしてください",
        "ptr_ok": "送信サーバー {host}（{ip}）の逆引き {ptr} は正引きと一致しています",
        "ptr_fail": "送信サーバー {host}（{ip}）の逆引きがないか、正引きと一致しません",
        "ptr_fix": "{ip} の逆引き（PTR）を、正引きできるホスト名に設定するよう回線事業者に依頼してください",
        "mx_ok": "バウンスの宛先ドメイン {domain} はメールを受け取れます（{hosts}）",
        "mx_fail": "バウンスの宛先ドメイン {domain} に MX も A もありません。不達通知が届きません",
        "mx_fix": "[sender] bounce_address を受信できるアドレスにしてください",
    },
    "en": {
        "offline": "cannot check: DNS does not answer (offline)",
        "offline_fix": "run it where the network is reachable, or give --nameserver",
        "spf_none": "no SPF record ({domain})",
        "spf_none_fix": "add an SPF TXT record to {domain}, e.g. \"v=spf1 {example} -all\"",
        "spf_many": "{n} SPF records ({domain}); anything but one is invalid",
        "spf_many_fix": "merge them into one \"v=spf1 …\" record",
        "spf_pass": "SPF authorises {what} ({domain})",
        "spf_fail": "SPF does not authorise {what} ({domain}, result {result})",
        "spf_fail_fix": "add {example} to the SPF record of {domain}",
        "spf_unknown": "SPF uses exists/ptr/macros, which this check does not evaluate ({domain})",
        "spf_file": "SPF record present ({domain}); file outbox, so the sending host is not checked",
        "spf_limit": "SPF needs more than 10 DNS look-ups ({domain}); receivers treat it as invalid",
        "spf_limit_fix": "use fewer include: terms",
        "dkim_none": "no DKIM signing configured ({kind} does not sign)",
        "dkim_none_fix": "make a key with 'newsletter dkim keygen --selector S', publish the TXT record it prints, "
                         "and set domain, selector and private_key_env under [dkim] in config.toml",
        "dkim_provider": "DKIM signing is done by {kind} (check its domain authentication CNAMEs in its console)",
        "dkim_missing": "no DKIM public key published ({name} TXT)",
        "dkim_missing_fix": "publish TXT \"{record}\" at {name}",
        "dkim_mismatch": "the DKIM public key at {name} does not match the configured private key",
        "dkim_mismatch_fix": "update the TXT at {name} to \"{record}\", or configure the right private key",
        "dkim_ok": "the DKIM public key matches the configured private key ({name})",
        "dmarc_none": "no DMARC record (_dmarc.{domain})",
        "dmarc_none_fix": "publish TXT \"v=DMARC1; p=none; rua=mailto:{rua}\" at _dmarc.{domain}, then move to "
                          "p=quarantine",
        "dmarc_ok": "DMARC record present ({name}, policy p={policy})",
        "dmarc_bad": "invalid DMARC record ({name}: {record})",
        "dmarc_bad_fix": "write it as \"v=DMARC1; p=none\"",
        "align_ok": "the From domain {from_domain} is aligned with {which} (DMARC alignment)",
        "align_fail": "the From domain {from_domain} matches neither DKIM d={dkim} nor the SPF domain {spf}",
        "align_fail_fix": "use the organisational domain of {from_domain} for [dkim] domain or the bounce address",
        "oneclick_ok": "one-click unsubscribe (RFC 8058): List-Unsubscribe-Post is sent and the URL is https",
        "oneclick_fail": "the unsubscribe URL is not https ({url}); Gmail does not accept it as one-click",
        "oneclick_fix": "set [site] base_url to an https:// URL",
        "ptr_ok": "the sending host {host} ({ip}) has reverse DNS {ptr}, which resolves back",
        "ptr_fail": "the sending host {host} ({ip}) has no reverse DNS that resolves back to it",
        "ptr_fix": "ask the network's provider to set a PTR record for {ip} to a name that resolves to it",
        "mx_ok": "the bounce domain {domain} accepts mail ({hosts})",
        "mx_fail": "the bounce domain {domain} has neither MX nor A: bounces will be lost",
        "mx_fix": "use a bounce_address that can receive mail",
    },
}


def _t(config: Config):
    table = _TEXT["en" if config.site.language == "en" else "ja"]

    def t(key: str, **kw: Any) -> str:
        return table[key].format(**kw)

    return t


def diagnose(config: Config, nameservers: Sequence[str] = (), *, timeout: float = 3.0,
             resolver: DNS | None = None) -> list[Check]:
    """Every check, in a fixed order."""
    t = _t(config)
    resolver = resolver or DNS(nameservers, timeout)
    checks = [_one_click(config, t)]
    dns_codes = ("spf", "dkim", "dmarc", "alignment", "ptr", "mx")
    if not resolver.online():
        return checks + [Check("dns", None, True, t("offline"), t("offline_fix"))]
    try:
        checks += _spf(config, resolver, t)
        checks += _dkim(config, resolver, t)
        dmarc, record = _dmarc(config, resolver, t)
        checks.append(dmarc)
        checks.append(_alignment(config, record, t))
        checks += _ptr(config, resolver, t)
        checks.append(_mx(config, resolver, t))
    except Offline:
        done = {c.code for c in checks}
        checks += [Check(code, None, code != "mx", t("offline"), t("offline_fix"))
                   for code in dns_codes if code not in done]
    return checks


def _from_domain(config: Config) -> str:
    return config.sender.address.rpartition("@")[2].lower()


def _envelope_domain(config: Config) -> str:
    return (config.sender.bounce_address or config.sender.address).rpartition("@")[2].lower()


def _one_click(config: Config, t) -> Check:
    if config.site.base_url.startswith("https://"):
        return Check("one-click", True, True, t("oneclick_ok"))
    return Check("one-click", False, True, t("oneclick_fail", url=config.site.base_url), t("oneclick_fix"))


def _smtp_host(config: Config) -> str | None:
    if config.provider.kind != "smtp":
        return None
    host = config.provider.options.get("host")
    return host if isinstance(host, str) else None


def _spf(config: Config, resolver: DNS, t) -> list[Check]:
    domain = _envelope_domain(config)
    spf = _SPF(resolver)
    kind = config.provider.kind
    includes = PROVIDER_SPF_INCLUDES.get(kind, ())
    host = _smtp_host(config)
    example = f"include:{includes[0]}" if includes else (f"a:{host}" if host else "ip4:203.0.113.25")
    records = spf.record(domain)
    if not records:
        return [Check("spf", False, True, t("spf_none", domain=domain), t("spf_none_fix", domain=domain,
                                                                               example=example))]
    if len(records) > 1:
        return [Check("spf", False, True, t("spf_many", domain=domain, n=len(records)), t("spf_many_fix"))]
    try:
        if includes:
            ok = spf.includes(domain, includes)
            what = f"include:{includes[0]}"
            if ok:
                return [Check("spf", True, True, t("spf_pass", domain=domain, what=what))]
            return [Check("spf", False, True, t("spf_fail", domain=domain, what=what, result="fail"),
                          t("spf_fail_fix", domain=domain, example=example))]
        if host is None:
            return [Check("spf", True, True, t("spf_file", domain=domain))]
        try:
            ips = [str(ipaddress.ip_address(host))]
        except ValueError:
            ips = resolver.addresses(host)
        for ip in ips:
            result = _SPF(resolver).check(ip, domain)
            what = f"{host} ({ip})"
            if result == "unknown":
                return [Check("spf", None, True, t("spf_unknown", domain=domain))]
            if result != "pass":
                return [Check("spf", False, True, t("spf_fail", domain=domain, what=what, result=result),
                              t("spf_fail_fix", domain=domain, example=example))]
        if not ips:
            return [Check("spf", None, True, t("ptr_fail", host=host, ip="-"), t("spf_fail_fix", domain=domain,
                                                                                   example=example))]
        return [Check("spf", True, True, t("spf_pass", domain=domain, what=", ".join(ips)))]
    except _TooManyLookups:
        return [Check("spf", False, True, t("spf_limit", domain=domain), t("spf_limit_fix"))]


def _dkim(config: Config, resolver: DNS, t) -> list[Check]:
    kind = config.provider.kind
    if config.dkim is None:
        if kind in SIGNED_BY_PROVIDER and not (kind == "mailgun" and config.provider.options.get("mode") == "mime"):
            return [Check("dkim", None, True, t("dkim_provider", kind=kind))]
        return [Check("dkim", False, True, t("dkim_none", kind=kind), t("dkim_none_fix"))]
    from .dkim_signer import signer_from_settings

    signer = signer_from_settings(config.dkim, config.base_dir)
    out = []
    for key in signer.keys:
        name = f"{key.selector}._domainkey.{config.dkim.domain}"
        record = key.public_record()
        published = [tags(r) for r in resolver.txt(name)]
        published = [p for p in published if p.get("p")]
        if not published:
            out.append(Check("dkim", False, True, t("dkim_missing", name=name),
                             t("dkim_missing_fix", name=name, record=record)))
        elif any(p["p"] == tags(record)["p"] for p in published):
            out.append(Check("dkim", True, True, t("dkim_ok", name=name)))
        else:
            out.append(Check("dkim", False, True, t("dkim_mismatch", name=name),
                             t("dkim_mismatch_fix", name=name, record=record)))
    return out


def _dmarc(config: Config, resolver: DNS, t) -> tuple[Check, dict[str, str] | None]:
    domain = _from_domain(config)
    names = [f"_dmarc.{domain}"]
    org = org_domain(domain)
    if org != domain:
        names.append(f"_dmarc.{org}")
    for name in names:
        records = [r for r in resolver.txt(name) if r.replace(" ", "").lower().startswith("v=dmarc1")]
        if not records:
            continue
        parsed = tags(records[0])
        policy = parsed.get("p", "").lower()
        if len(records) > 1 or policy not in ("none", "quarantine", "reject"):
            return Check("dmarc", False, True, t("dmarc_bad", name=name, record=records[0]), t("dmarc_bad_fix")), None
        return Check("dmarc", True, True, t("dmarc_ok", name=name, policy=policy)), parsed
    rua = f"dmarc@{org}"
    fix = t("dmarc_none_fix", domain=domain, rua=rua)
    return Check("dmarc", False, True, t("dmarc_none", domain=domain), fix), None


def _alignment(config: Config, dmarc: dict[str, str] | None, t) -> Check:
    from_domain = _from_domain(config)
    dmarc = dmarc or {}
    strict_dkim = dmarc.get("adkim", "r").lower() == "s"
    strict_spf = dmarc.get("aspf", "r").lower() == "s"
    dkim_domain = config.dkim.domain if config.dkim else None
    kind = config.provider.kind
    spf_domain = _envelope_domain(config)
    which = []
    if dkim_domain and aligned(dkim_domain, from_domain, strict_dkim):
        which.append(f"DKIM d={dkim_domain}")
    if kind not in SIGNED_BY_PROVIDER and aligned(spf_domain, from_domain, strict_spf):
        which.append(f"SPF {spf_domain}")
    if which:
        return Check("alignment", True, True, t("align_ok", from_domain=from_domain, which=" / ".join(which)))
    if dkim_domain is None and kind in SIGNED_BY_PROVIDER:
        # The provider signs and sets its own envelope; only its console can say whether it aligns.
        return Check("alignment", None, True, t("dkim_provider", kind=kind))
    return Check("alignment", False, True,
                 t("align_fail", from_domain=from_domain, dkim=dkim_domain or "-", spf=spf_domain),
                 t("align_fail_fix", from_domain=from_domain))


def _ptr(config: Config, resolver: DNS, t) -> list[Check]:
    host = _smtp_host(config)
    if host is None:
        return []
    try:
        ips = [str(ipaddress.ip_address(host))]
    except ValueError:
        ips = resolver.addresses(host)
    out = []
    for ip in ips:
        if ipaddress.ip_address(ip).is_loopback:
            continue
        names = resolver.ptr(ip)
        good = next((n for n in names if ip in resolver.addresses(n)), None)
        if good:
            out.append(Check("ptr", True, True, t("ptr_ok", host=host, ip=ip, ptr=good)))
        else:
            out.append(Check("ptr", False, True, t("ptr_fail", host=host, ip=ip), t("ptr_fix", ip=ip)))
    return out


def _mx(config: Config, resolver: DNS, t) -> Check:
    domain = _envelope_domain(config)
    hosts = resolver.mx(domain) or resolver.addresses(domain)
    if hosts:
        return Check("mx", True, False, t("mx_ok", domain=domain, hosts=", ".join(hosts[:3])))
    return Check("mx", False, False, t("mx_fail", domain=domain), t("mx_fix"))


def failing(checks: Iterable[Check]) -> list[Check]:
    """The bulk-sender requirements that fail."""
    return [c for c in checks if c.required and c.ok is False]


def as_json(checks: Sequence[Check]) -> str:
    return json.dumps({"ok": not failing(checks), "checks": [asdict(c) for c in checks]}, ensure_ascii=False,
                      indent=2)


def format_line(check: Check) -> str:
    line = f"{check.mark} {check.code}: {check.message}"
    if check.fix and check.ok is not True:
        line += f"\n    → {check.fix}"
    return line


# --------------------------------------------------------------------------- preflight

# Mailbox providers whose 2024 bulk-sender rules refuse unauthenticated mail (Gmail; Yahoo and
# its AOL brand; Yahoo! JAPAN announced the same requirements for its own service).
BULK_RULE_DOMAINS = ("gmail.com", "googlemail.com", "yahoo.com", "ymail.com", "rocketmail.com", "aol.com",
                     "yahoo.co.jp")
BULK_SENDER_THRESHOLD = 5000  # Gmail's definition of a bulk sender: 5,000 messages a day to its users
_AUTH_CODES = ("dkim", "dmarc", "alignment")
_ONLINE: dict[tuple[str, ...], DNS] = {}


def preflight_findings(config: Config, big_mailbox_readers: int, nameservers: Sequence[str] = ()
                       ) -> list[tuple[str, str, str]]:
    """(severity, code, message) for ``edition check``/``send``: the doctor's failing checks as
    warnings; a failing DKIM/DMARC check is an error when more than 5,000 readers are at Gmail or
    Yahoo.  Nothing at all when DNS does not answer (the resolver is asked once per process)."""
    key = tuple(nameservers)
    resolver = _ONLINE.get(key)
    if resolver is None:
        resolver = _ONLINE[key] = DNS(nameservers, timeout=2.0)
    if not resolver.online():
        return []
    out = []
    for check in failing(diagnose(config, resolver=resolver)):
        severity = "warning"
        if check.code in _AUTH_CODES and big_mailbox_readers > BULK_SENDER_THRESHOLD:
            severity = "error"
        message = f"deliverability: {check.message}"
        if severity == "error":
            message += (f" — {big_mailbox_readers} readers at Gmail/Yahoo, which refuse unauthenticated bulk mail"
                        f" (newsletter doctor shows the fix)")
        out.append((severity, f"doctor-{check.code}", message))
    return out
