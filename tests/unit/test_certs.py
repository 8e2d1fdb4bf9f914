"""The webhook certificate: issued with `cryptography`, renewed before it expires."""

from __future__ import annotations

import datetime
import ssl
import tempfile
from pathlib import Path

import pytest
from cryptography import x509

from nebula_id_operator import certs

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
HOSTS = ["nebula-id-webhook.nebula-id.svc", "127.0.0.1"]
DAY = datetime.timedelta(days=1)


def load(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def test_a_fresh_leaf_is_signed_by_the_ca_and_names_the_hosts() -> None:
    material = certs.ensure(None, hosts=HOSTS, now=NOW)
    leaf, ca = load(material.tls_cert), load(material.ca_cert)
    leaf.verify_directly_issued_by(ca)
    assert certs.hosts_of(material.tls_cert) == set(HOSTS)
    assert material.ca_bundle == material.ca_cert
    assert certs.not_after(material.tls_cert) == NOW + certs.LEAF_VALIDITY


def test_the_material_loads_into_an_ssl_server_context() -> None:
    material = certs.ensure(None, hosts=HOSTS, now=datetime.datetime.now(datetime.UTC))
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = Path(tmp, "tls.crt"), Path(tmp, "tls.key")
        cert.write_bytes(material.tls_cert)
        key.write_bytes(material.tls_key)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        client = ssl.create_default_context(cadata=material.ca_bundle.decode())
    assert client.cert_store_stats()["x509_ca"] == 1


def test_good_material_is_returned_unchanged() -> None:
    material = certs.ensure(None, hosts=HOSTS, now=NOW)
    assert certs.ensure(material, hosts=HOSTS, now=NOW + 100 * DAY) is material


def test_the_leaf_is_renewed_before_expiry_under_the_same_ca() -> None:
    material = certs.ensure(None, hosts=HOSTS, now=NOW)
    later = NOW + certs.LEAF_VALIDITY - certs.RENEW_BEFORE + DAY
    renewed = certs.ensure(material, hosts=HOSTS, now=later)
    assert renewed.tls_cert != material.tls_cert
    assert renewed.ca_cert == material.ca_cert
    assert renewed.ca_bundle == material.ca_bundle
    load(renewed.tls_cert).verify_directly_issued_by(load(material.ca_cert))
    assert certs.not_after(renewed.tls_cert) > later + certs.RENEW_BEFORE


def test_a_new_host_name_reissues_the_leaf() -> None:
    material = certs.ensure(None, hosts=HOSTS, now=NOW)
    renewed = certs.ensure(material, hosts=[*HOSTS, "other.svc"], now=NOW)
    assert "other.svc" in certs.hosts_of(renewed.tls_cert)
    assert renewed.ca_cert == material.ca_cert


def test_the_ca_rollover_keeps_the_old_ca_trusted_until_it_expires() -> None:
    material = certs.ensure(None, hosts=HOSTS, now=NOW)
    near_ca_end = NOW + certs.CA_VALIDITY - certs.RENEW_BEFORE + DAY
    rolled = certs.ensure(material, hosts=HOSTS, now=near_ca_end)
    assert rolled.ca_cert != material.ca_cert
    bundle = x509.load_pem_x509_certificates(rolled.ca_bundle)
    assert [c.subject for c in bundle] == [load(rolled.ca_cert).subject] * 2
    assert {c.serial_number for c in bundle} == {
        load(rolled.ca_cert).serial_number,
        load(material.ca_cert).serial_number,
    }
    load(rolled.tls_cert).verify_directly_issued_by(load(rolled.ca_cert))
    after_old_ca = NOW + certs.CA_VALIDITY + DAY
    pruned = certs.ensure(rolled, hosts=HOSTS, now=after_old_ca)
    assert pruned.ca_bundle == rolled.ca_cert


def test_secret_data_round_trips() -> None:
    material = certs.ensure(None, hosts=HOSTS, now=NOW)
    assert certs.WebhookCerts.from_secret_data(material.to_secret_data()) == material
    assert certs.WebhookCerts.from_secret_data({}) is None
    assert certs.WebhookCerts.from_secret_data({"tls.crt": "eA=="}) is None


def test_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        certs.ensure(None, hosts=HOSTS, now=datetime.datetime(2026, 1, 1))
