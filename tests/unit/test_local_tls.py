"""The local CA and the brokers' certificate: names, key format, validity and renewal."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ys_platform.local import tls

NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)


def _keystore(path: Path) -> tuple[bytes, list[x509.Certificate]]:
    data = path.read_bytes()
    return data, x509.load_pem_x509_certificates(data)


def test_broker_certificate_names_the_loopback_host_and_is_issued_by_the_ca(
    tmp_path: Path,
) -> None:
    files, made = tls.ensure_tls(tmp_path, now=NOW)
    assert made == ["CA", "ys-broker certificate"]
    ca = x509.load_pem_x509_certificate(files.ca.read_bytes())
    data, chain = _keystore(files.broker_keystore)
    leaf = chain[0]

    # Key first, then the leaf and the CA: what Kafka's PEM keystore file reads.
    assert data.startswith(b"-----BEGIN PRIVATE KEY-----\n")
    assert [c.subject for c in chain] == [leaf.subject, ca.subject]
    assert leaf.subject.rfc4514_string() == "CN=ys-broker"
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    usage = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    # Server (its listeners) and client (toward the other controllers, mutual TLS).
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    leaf.verify_directly_issued_by(ca)

    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert (constraints.ca, constraints.path_length) == (True, 0)
    assert ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == tls.CA_NAME
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == tls.CERT_VALIDITY + tls.BACKDATE
    assert ca.not_valid_after_utc == NOW + tls.CA_VALIDITY


def test_keys_are_unencrypted_pkcs8_and_match_their_certificates(tmp_path: Path) -> None:
    files, _ = tls.ensure_tls(tmp_path, now=NOW)
    data, chain = _keystore(files.broker_keystore)
    key = serialization.load_pem_private_key(data, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.public_key() == chain[0].public_key()
    ca_key_pem = (tmp_path / tls.CA_KEY_FILE).read_bytes()
    assert ca_key_pem.startswith(b"-----BEGIN PRIVATE KEY-----\n")
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    ca = x509.load_pem_x509_certificate(files.ca.read_bytes())
    assert ca_key.public_key() == ca.public_key()


def test_valid_certificates_are_kept(tmp_path: Path) -> None:
    files, _ = tls.ensure_tls(tmp_path, now=NOW)
    before = (files.ca.read_bytes(), files.broker_keystore.read_bytes())
    _, made = tls.ensure_tls(tmp_path, now=NOW + dt.timedelta(days=300))
    assert made == []
    assert (files.ca.read_bytes(), files.broker_keystore.read_bytes()) == before


def test_broker_certificate_is_renewed_within_the_margin_under_the_same_ca(tmp_path: Path) -> None:
    files, _ = tls.ensure_tls(tmp_path, now=NOW)
    ca_before = files.ca.read_bytes()
    old_leaf = _keystore(files.broker_keystore)[1][0]
    later = old_leaf.not_valid_after_utc - tls.RENEW_MARGIN + dt.timedelta(seconds=1)
    _, made = tls.ensure_tls(tmp_path, now=later)
    assert made == ["ys-broker certificate"]
    assert files.ca.read_bytes() == ca_before
    new_leaf = _keystore(files.broker_keystore)[1][0]
    assert new_leaf.serial_number != old_leaf.serial_number
    assert new_leaf.not_valid_after_utc == later + tls.CERT_VALIDITY


def test_expired_ca_is_renewed_with_a_new_broker_certificate(tmp_path: Path) -> None:
    files, _ = tls.ensure_tls(tmp_path, now=NOW)
    old_ca = x509.load_pem_x509_certificate(files.ca.read_bytes())
    expired = old_ca.not_valid_after_utc + dt.timedelta(days=1)
    _, made = tls.ensure_tls(tmp_path, now=expired)
    assert made == ["CA", "ys-broker certificate"]
    new_ca = x509.load_pem_x509_certificate(files.ca.read_bytes())
    assert new_ca.serial_number != old_ca.serial_number
    _keystore(files.broker_keystore)[1][0].verify_directly_issued_by(new_ca)


def test_a_broker_certificate_of_another_ca_is_replaced(tmp_path: Path) -> None:
    files, _ = tls.ensure_tls(tmp_path, now=NOW)
    other = tmp_path / "other"
    other_files, _ = tls.ensure_tls(other, now=NOW)
    files.broker_keystore.write_bytes(other_files.broker_keystore.read_bytes())
    _, made = tls.ensure_tls(tmp_path, now=NOW)
    assert made == ["ys-broker certificate"]
    ca = x509.load_pem_x509_certificate(files.ca.read_bytes())
    _keystore(files.broker_keystore)[1][0].verify_directly_issued_by(ca)


def test_needs_renewal_bounds() -> None:
    _, cert = tls.issue_certificate(*tls.issue_ca(NOW), tls.BROKER_NAME, NOW)
    assert not tls.needs_renewal(cert, NOW)
    assert tls.needs_renewal(cert, NOW - dt.timedelta(hours=1))  # not yet valid
    assert tls.needs_renewal(cert, cert.not_valid_after_utc - tls.RENEW_MARGIN)
    assert not tls.needs_renewal(
        cert, cert.not_valid_after_utc - tls.RENEW_MARGIN - dt.timedelta(seconds=1)
    )
