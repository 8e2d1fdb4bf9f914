"""The webhook's serving certificate: a private CA and a leaf, renewed before expiry.

kopf can generate a self-signed certificate itself, but through certbuilder and
oscrypto, which fail to load some OpenSSL 3 builds; `cryptography` does not.  Every replica of the
operator must serve with a certificate that the same CA signed (the API server
trusts one `caBundle`), so the material lives in one Secret and this module only
decides, purely, whether what is stored is still good and what replaces it.

Rotation: the leaf is renewed `renew_before` ahead of its expiry, signed by the
same CA, so the `caBundle` does not change.  The CA is renewed the same way; the
bundle then carries the old CA too until the old one expires, so a replica that
still serves the old leaf stays trusted while the others catch up.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import ipaddress
from collections.abc import Mapping, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from nebula_id import errors

CA_VALIDITY = datetime.timedelta(days=3650)
LEAF_VALIDITY = datetime.timedelta(days=365)
RENEW_BEFORE = datetime.timedelta(days=30)
CLOCK_SKEW = datetime.timedelta(minutes=5)

CA_CERT, CA_KEY, TLS_CERT, TLS_KEY, CA_BUNDLE = (
    "ca.crt",
    "ca.key",
    "tls.crt",
    "tls.key",
    "ca-bundle.crt",
)


@dataclasses.dataclass(frozen=True, slots=True)
class WebhookCerts:
    """PEM material as stored in the Secret."""

    ca_cert: bytes
    ca_key: bytes
    tls_cert: bytes
    tls_key: bytes
    ca_bundle: bytes
    """What the API server trusts: the current CA, plus the previous one during a rollover."""

    def to_secret_data(self) -> dict[str, str]:
        """The Secret's `data` (base64)."""
        return {
            CA_CERT: _b64(self.ca_cert),
            CA_KEY: _b64(self.ca_key),
            TLS_CERT: _b64(self.tls_cert),
            TLS_KEY: _b64(self.tls_key),
            CA_BUNDLE: _b64(self.ca_bundle),
        }

    @classmethod
    def from_secret_data(cls, data: Mapping[str, str] | None) -> WebhookCerts | None:
        """Read a Secret's `data`; None when it is empty or incomplete (then we issue anew)."""
        if not data or any(k not in data for k in (CA_CERT, CA_KEY, TLS_CERT, TLS_KEY)):
            return None
        raw = {k: base64.b64decode(v) for k, v in data.items()}
        return cls(
            ca_cert=raw[CA_CERT],
            ca_key=raw[CA_KEY],
            tls_cert=raw[TLS_CERT],
            tls_key=raw[TLS_KEY],
            ca_bundle=raw.get(CA_BUNDLE) or raw[CA_CERT],
        )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _load_key(pem: bytes) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise errors.ConfigError("the webhook CA key must be an EC key")
    return key


def _subject(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "nebula-id"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64]),
        ]
    )


def new_ca(
    *, now: datetime.datetime, validity: datetime.timedelta = CA_VALIDITY
) -> tuple[bytes, bytes]:
    """A fresh CA as (cert PEM, key PEM)."""
    key = _new_key()
    name = _subject("nebula-id webhook CA")
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def new_leaf(
    ca_cert: bytes,
    ca_key: bytes,
    *,
    hosts: Sequence[str],
    now: datetime.datetime,
    validity: datetime.timedelta = LEAF_VALIDITY,
) -> tuple[bytes, bytes]:
    """A serving cert for `hosts` (DNS names or IP addresses) signed by the CA."""
    if not hosts:
        raise errors.ConfigError("the webhook certificate needs at least one host name")
    ca = x509.load_pem_x509_certificate(ca_cert)
    signer = _load_key(ca_key)
    key = _new_key()
    sans: list[x509.GeneralName] = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    not_after = min(now + validity, ca.not_valid_after_utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_subject(hosts[0]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), critical=False
        )
        .sign(signer, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def not_after(cert_pem: bytes) -> datetime.datetime:
    return x509.load_pem_x509_certificate(cert_pem).not_valid_after_utc


def hosts_of(cert_pem: bytes) -> set[str]:
    """The DNS names and IP addresses a certificate is valid for."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return set(san.get_values_for_type(x509.DNSName)) | {
        str(ip) for ip in san.get_values_for_type(x509.IPAddress)
    }


def _expiring(cert_pem: bytes, now: datetime.datetime, renew_before: datetime.timedelta) -> bool:
    return not_after(cert_pem) - renew_before <= now


def _bundle(*pems: bytes, now: datetime.datetime) -> bytes:
    """Concatenate CA certs that are still valid, without duplicates."""
    seen: list[bytes] = []
    for pem in pems:
        for block in x509.load_pem_x509_certificates(pem):
            if block.not_valid_after_utc <= now:
                continue
            encoded = block.public_bytes(serialization.Encoding.PEM)
            if encoded not in seen:
                seen.append(encoded)
    return b"".join(seen)


def ensure(
    current: WebhookCerts | None,
    *,
    hosts: Sequence[str],
    now: datetime.datetime,
    renew_before: datetime.timedelta = RENEW_BEFORE,
    leaf_validity: datetime.timedelta = LEAF_VALIDITY,
    ca_validity: datetime.timedelta = CA_VALIDITY,
) -> WebhookCerts:
    """`current` if it is still good for `hosts`, else renewed material.

    Returns the very same object when nothing changes, so callers can tell by
    identity whether to write the Secret.
    """
    if now.tzinfo is None:
        raise ValueError("`now` must be timezone-aware")
    if current is None:
        ca_cert, ca_key = new_ca(now=now, validity=ca_validity)
        tls_cert, tls_key = new_leaf(ca_cert, ca_key, hosts=hosts, now=now, validity=leaf_validity)
        return WebhookCerts(ca_cert, ca_key, tls_cert, tls_key, ca_bundle=ca_cert)

    ca_cert, ca_key, bundle = current.ca_cert, current.ca_key, current.ca_bundle
    renew_ca = _expiring(ca_cert, now, renew_before)
    if renew_ca:
        ca_cert, ca_key = new_ca(now=now, validity=ca_validity)
        bundle = _bundle(ca_cert, current.ca_bundle, now=now)
    leaf_ok = (
        not renew_ca
        and not _expiring(current.tls_cert, now, renew_before)
        and set(hosts) <= hosts_of(current.tls_cert)
    )
    if leaf_ok:
        pruned = _bundle(bundle, now=now)
        if pruned == current.ca_bundle:
            return current
        return dataclasses.replace(current, ca_bundle=pruned)
    tls_cert, tls_key = new_leaf(ca_cert, ca_key, hosts=hosts, now=now, validity=leaf_validity)
    return WebhookCerts(ca_cert, ca_key, tls_cert, tls_key, ca_bundle=bundle)
