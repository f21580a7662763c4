"""DKIM signing (RFC 6376; Ed25519 per RFC 8463) of the messages we compose.

Rules this module keeps:

- A message is signed once, after personalisation, just before a provider
  that sends our own MIME bytes (``file``, ``smtp``, ``ses``, Mailgun in
  ``mime`` mode) hands it over.  Providers that build the message themselves
  from parts (SendGrid, Postmark, Mailgun batches) sign with the service's own
  domain authentication; signing our bytes for them would be wasted work, so
  :func:`wrap` leaves them alone (``newsletter doctor`` says so).
- Canonicalisation is relaxed/relaxed.  The signed header list always names
  From, To, Subject, Date, Message-ID, MIME-Version, Content-Type, Reply-To,
  List-Id, List-Unsubscribe and List-Unsubscribe-Post: Gmail honours one-click
  unsubscribe only when the last two are signed.  A listed header that a
  message lacks is signed as absent, so nobody can add it later.
- ``rsa-sha256`` (2048 bits) is always there; ``ed25519-sha256`` can be added
  alongside (receivers that do not know Ed25519 ignore that signature and
  verify the RSA one).
- The DKIM protocol work — header selection, relaxed canonicalisation of
  headers and body, the tag list, folding — is dkimpy's (``dkim.rfc822_parse``,
  ``CanonicalizationPolicy``, ``hash_headers``, ``fold``); only the public-key
  operation goes through ``cryptography`` (OpenSSL).  Why: dkimpy's own RSA is
  pure Python, about 10–30 ms per signature on this machine, which would cap a
  send at a few dozen messages a second; OpenSSL signs the same digest in about
  1 ms.  The tests verify every signature with dkimpy's verifier against a key
  published in a local DNS server.
- Keys come from an environment variable (PEM) or a file; never from
  config.toml.  A key that cannot be read is a ConfigError naming the key.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import dkim
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from .errors import ConfigError
from .interfaces import OutgoingMessage, Provider, SendResult
from .sanitize import ascii_domain

SIGNED_HEADERS: tuple[bytes, ...] = (
    b"from", b"to", b"subject", b"date", b"message-id", b"mime-version", b"content-type",
    b"reply-to", b"list-id", b"list-unsubscribe", b"list-unsubscribe-post",
)
ALGORITHMS = ("rsa-sha256", "ed25519-sha256")
_POLICY = dkim.CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
MIN_RSA_BITS = 1024
RECOMMENDED_RSA_BITS = 2048


@dataclass(frozen=True)
class DkimKey:
    """One signing key: the selector it is published under and the private key."""

    selector: str
    algorithm: str  # "rsa-sha256" | "ed25519-sha256"
    private_key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

    def public_record(self) -> str:
        """The TXT record value to publish at ``<selector>._domainkey.<domain>``."""
        return "v=DKIM1; k={}; p={}".format(
            "rsa" if self.algorithm == "rsa-sha256" else "ed25519", public_key_b64(self.private_key))


def public_key_b64(key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey) -> str:
    """The ``p=`` value: RSA as DER SubjectPublicKeyInfo, Ed25519 as the raw 32 bytes (RFC 8463)."""
    pub = key.public_key()
    if isinstance(pub, ed25519.Ed25519PublicKey):
        raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    else:
        raw = pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(raw).decode("ascii")


def load_private_key(pem: bytes, algorithm: str, where: str) -> rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey:
    """A private key from PEM (PKCS#1 or PKCS#8); ConfigError naming ``where`` if unusable."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{where}: not a PEM private key without a passphrase ({exc})") from None
    if algorithm == "rsa-sha256":
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ConfigError(f"{where}: algorithm rsa-sha256 needs an RSA key")
        if key.key_size < MIN_RSA_BITS:
            raise ConfigError(f"{where}: RSA key of {key.key_size} bits; receivers refuse less than {MIN_RSA_BITS}"
                              f" (use {RECOMMENDED_RSA_BITS})")
    elif not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ConfigError(f"{where}: algorithm ed25519-sha256 needs an Ed25519 key")
    return key


def generate_key(algorithm: str) -> rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey:
    if algorithm == "rsa-sha256":
        return rsa.generate_private_key(public_exponent=65537, key_size=RECOMMENDED_RSA_BITS)
    return ed25519.Ed25519PrivateKey.generate()


def private_pem(key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class Signer:
    """Adds one DKIM-Signature header per key to a message (RSA first, then Ed25519)."""

    def __init__(self, domain: str, keys: Sequence[DkimKey], *, clock: Callable[[], float] = time.time):
        if not keys:
            raise ValueError("a signer needs at least one key")
        self.domain = ascii_domain(domain).encode("ascii")
        self.keys = tuple(keys)
        self.clock = clock

    def sign(self, data: bytes) -> bytes:
        """``data`` with DKIM-Signature headers prepended (CRLF line endings kept)."""
        end = data.find(b"\r\n\r\n")
        head, body = (data, b"") if end < 0 else (data[:end + 4], data[end + 4:])
        headers, _ = dkim.rfc822_parse(head)  # only the header block: parsing a 40 KB body line by line costs 1 ms
        body_hash = base64.b64encode(hashlib.sha256(relaxed_body(body)).digest())
        canonical = _POLICY.canonicalize_headers(headers)
        stamp = str(int(self.clock())).encode("ascii")
        added = b""
        for key in self.keys:
            added = self._header(key, canonical, body_hash, stamp) + added
        return added + data

    def _header(self, key: DkimKey, canonical_headers, body_hash: bytes, stamp: bytes) -> bytes:
        fields = [
            (b"v", b"1"), (b"a", key.algorithm.encode("ascii")), (b"c", b"relaxed/relaxed"),
            (b"d", self.domain), (b"s", key.selector.encode("ascii")), (b"t", stamp),
            (b"h", b" : ".join(SIGNED_HEADERS)), (b"bh", body_hash), (b"b", b""),
        ]
        value = dkim.fold(b"; ".join(b"=".join(f) for f in fields), namelen=len(b"DKIM-Signature"))
        hasher = hashlib.sha256()
        # An empty b= is what the verifier hashes too (RFC 6376 3.7); the header
        # itself is hashed last, without its trailing CRLF.
        dkim.hash_headers(hasher, _POLICY, canonical_headers, SIGNED_HEADERS, (b"DKIM-Signature", b" " + value),
                          dict(fields))
        digest = hasher.digest()
        if isinstance(key.private_key, rsa.RSAPrivateKey):
            signature = key.private_key.sign(digest, padding.PKCS1v15(), Prehashed(hashes.SHA256()))
        else:
            signature = key.private_key.sign(digest)  # RFC 8463: Ed25519 over the SHA-256 digest
        b64 = base64.b64encode(signature)
        # Fold the signature into lines of 72; relaxed canonicalisation and the b=
        # removal make the folding invisible to the verifier.
        chunks = [b64[i:i + 70] for i in range(0, len(b64), 70)]
        return b"DKIM-Signature: " + value + b"\r\n\t" + b"\r\n\t".join(chunks) + b"\r\n"


def relaxed_body(body: bytes) -> bytes:
    """RFC 6376 3.4.4 relaxed body canonicalisation, with bytes methods instead of
    dkimpy's regular expressions (which take 3 ms on a 40 KB digest — most of the
    cost of signing).  A property test holds it equal to dkimpy's
    ``CanonicalizationPolicy.canonicalize_body`` for any input."""
    if b"\t" in body:
        body = body.replace(b"\t", b" ")
    while b"  " in body:  # each pass halves every run of spaces
        body = body.replace(b"  ", b" ")
    body = body.replace(b" \r\n", b"\r\n")  # runs are single spaces now
    # Empty lines at the end go, down to one CRLF; a body without a final CRLF gets one.
    n = len(body)
    while body.endswith(b"\r\n", 0, n):
        n -= 2
    body = body + b"\r\n" if n == len(body) else body[:n + 2]
    return b"" if body == b"\r\n" else body


def signer_from_settings(settings, base_dir: Path) -> Signer | None:
    """The signer ``[dkim]`` asks for, or None when DKIM is not configured."""
    if settings is None:
        return None
    keys = [DkimKey(settings.selector, "rsa-sha256",
                    load_private_key(_read_key(settings.private_key_env, settings.private_key_file, base_dir,
                                               "dkim.private_key"), "rsa-sha256", "dkim.private_key"))]
    if settings.ed25519_selector:
        keys.append(DkimKey(settings.ed25519_selector, "ed25519-sha256", load_private_key(
            _read_key(settings.ed25519_private_key_env, settings.ed25519_private_key_file, base_dir,
                      "dkim.ed25519_private_key"), "ed25519-sha256", "dkim.ed25519_private_key")))
    return Signer(settings.domain, keys)


def _read_key(env: str | None, file: str | None, base_dir: Path, where: str) -> bytes:
    if env:
        value = os.environ.get(env)
        if not value:
            raise ConfigError(f"{where}_env: environment variable {env} is not set (it holds the PEM private key)")
        return value.encode()
    assert file is not None
    path = (base_dir / file) if not os.path.isabs(file) else Path(file)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{where}_file: cannot read {path}: {exc.strerror}") from None


class SigningProvider:
    """A provider that signs each message's bytes, then hands them to the real one.

    Signing runs in the caller's thread — the engine's sending threads — so it
    overlaps with the other connections' network waits instead of adding to the
    composing thread's work."""

    def __init__(self, inner: Provider, signer: Signer):
        self.inner = inner
        self.signer = signer
        self.name = inner.name
        self.max_batch = inner.max_batch

    @property
    def accepts_8bit(self) -> bool:
        return bool(getattr(self.inner, "accepts_8bit", False))

    def send(self, batch: Sequence[OutgoingMessage]) -> list[SendResult]:
        return self.inner.send([dataclasses.replace(m, data=self.signer.sign(m.data)) for m in batch])

    def close(self) -> None:
        self.inner.close()

    def __getattr__(self, name: str):  # anything else a caller asks of the real provider
        return getattr(self.inner, name)


def sends_raw_mime(provider: Provider) -> bool:
    """Whether the provider hands over ``OutgoingMessage.data`` as it is (so a signature on it survives)."""
    return bool(getattr(provider, "sends_raw_mime", False))


def wrap(provider: Provider, signer: Signer | None) -> Provider:
    if signer is None or not sends_raw_mime(provider):
        return provider
    return SigningProvider(provider, signer)
