"""A real DNS server on 127.0.0.1 (dnslib, UDP) answering from a dict zone, for the
DKIM and ``doctor`` tests.

``zone`` maps (name, type) → list of values: TXT values as str, A/AAAA as addresses,
MX as "10 mx.example.jp", PTR as a host name.  The root zone's NS is answered so
that the doctor's "is DNS there at all" probe passes; any other name is NXDOMAIN.
The zone can be changed while the server runs (tests publish, break and fix records).
"""

from __future__ import annotations

import socket

import dns.resolver
from dnslib import AAAA, MX, NS, PTR, QTYPE, RCODE, RR, TXT, A, DNSRecord
from dnslib.server import BaseResolver, DNSServer


def _txt(value: str) -> TXT:
    raw = value.encode("utf-8")
    return TXT([raw[i:i + 255] for i in range(0, len(raw), 255)])


_BUILD = {
    "TXT": _txt,
    "A": A,
    "AAAA": AAAA,
    "PTR": PTR,
    "NS": NS,
    "MX": lambda v: MX(v.split()[1], int(v.split()[0])),
}


class _Resolver(BaseResolver):
    def __init__(self, zone: dict[tuple[str, str], list[str]]):
        self.zone = zone

    def resolve(self, request: DNSRecord, handler):
        reply = request.reply()
        qname = str(request.q.qname).rstrip(".").lower()
        qtype = QTYPE[request.q.qtype]
        if qname == "" and qtype == "NS":
            reply.add_answer(RR(".", QTYPE.NS, rdata=NS("a.root.test."), ttl=60))
            return reply
        values = self.zone.get((qname, qtype))
        if values is None:
            if not any(name == qname for name, _ in self.zone):
                reply.header.rcode = RCODE.NXDOMAIN
            return reply
        for v in values:
            reply.add_answer(RR(qname + ".", getattr(QTYPE, qtype), rdata=_BUILD[qtype](v), ttl=60))
        return reply


class LocalDNS:
    def __init__(self, zone: dict[tuple[str, str], list[str]] | None = None):
        self.zone: dict[tuple[str, str], list[str]] = {} if zone is None else zone
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.server = DNSServer(_Resolver(self.zone), port=self.port, address="127.0.0.1", logger=_Quiet())

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> LocalDNS:
        self.server.start_thread()
        return self

    def stop(self) -> None:
        self.server.stop()

    def resolver(self) -> dns.resolver.Resolver:
        r = dns.resolver.Resolver(configure=False)
        r.nameservers = ["127.0.0.1"]
        r.port = self.port
        r.lifetime = 3
        return r

    def dkim_dnsfunc(self):
        """A ``dnsfunc`` for dkimpy's verify that asks this server."""
        resolver = self.resolver()

        def get_txt(name: bytes, timeout: int = 5) -> bytes | None:
            try:
                answer = resolver.resolve(name.decode("ascii").rstrip("."), "TXT")
            except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
                return None
            return b"".join(answer[0].strings)

        return get_txt


class _Quiet:
    def __getattr__(self, name):
        return lambda *a, **k: None
