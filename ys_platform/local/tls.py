"""The secure stack's local certificate authority and the brokers' certificate, in PEM.

Kafka reads PEM directly (``ssl.keystore.type=PEM``, KIP-651) and librdkafka takes the CA as a
PEM file, so no Java keystore is ever made. Keys are unencrypted PKCS#8 (``BEGIN PRIVATE KEY``,
the one form Kafka's PEM loader takes without ``ssl.key.password``) in files only their owner
reads. The certificates name 127.0.0.1 and localhost, the only addresses the stack listens on,
so hostname verification (``ssl.endpoint.identification.algorithm=https``) stays on everywhere.

The functions that make certificates are pure (the clock is a parameter); :func:`ensure_tls`
is the one that touches the disk, renewing what has expired or is about to.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ys_platform.local.config import LOCAL_HOSTS
from ys_platform.local.secrets import CA_FILE, write_secret

CA_KEY_FILE = "ca-key.pem"
# One file with the private key and the certificate chain: Kafka's file-based PEM keystore
# (ssl.keystore.location with ssl.keystore.type=PEM) reads both from the same file.
BROKER_KEYSTORE_FILE = "broker-keystore.pem"

CA_NAME = "ys-platform local CA"
# The brokers' (and controllers') one identity: every node of the local cluster listens on
# 127.0.0.1, so one certificate serves them all, and its subject is the TLS principal the
# controllers see (User:CN=ys-broker, mapped to User:ys-broker by config.SSL_PRINCIPAL_RULES).
BROKER_NAME = "ys-broker"

# A development CA outlives many broker certificates; both stay short enough that an expired
# one is met (and renewed by the next `up`) rather than forgotten.
CA_VALIDITY = dt.timedelta(days=5 * 365)
CERT_VALIDITY = dt.timedelta(days=365)
# Renewed this long before expiry, so a stack brought up today does not fail over a weekend.
RENEW_MARGIN = dt.timedelta(days=30)
# Backdated a little: a certificate "not yet valid" by a second of clock skew would be refused.
BACKDATE = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class TlsFiles:
    """Where the stack's PEM files are."""

    ca: Path
    """The CA certificate every client and broker trusts (ssl.ca.location, the truststore)."""
    broker_keystore: Path
    """The brokers' private key and certificate chain (ssl.keystore.location)."""


def _new_key() -> ec.EllipticCurvePrivateKey:
    # P-256: supported by Java's TLS and OpenSSL alike, and generated in microseconds.
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str) -> x509.Name:
    # The common name alone, so Kafka's principal for the certificate is exactly "CN=<name>".
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def issue_ca(now: dt.datetime) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A self-signed CA that may sign end-entity certificates only (path length 0)."""
    key = _new_key()
    subject = _name(CA_NAME)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def issue_certificate(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    common_name: str,
    now: dt.datetime,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A certificate for 127.0.0.1 and localhost, for servers and clients alike: a broker is
    the TLS client of the other nodes' controller listeners (mutual TLS)."""
    key = _new_key()
    not_after = min(now + CERT_VALIDITY, ca_cert.not_valid_after_utc)
    alt_names = [_alt_name(host) for host in LOCAL_HOSTS]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def _alt_name(host: str) -> x509.GeneralName:
    """An IP address SAN for an address (what TLS clients match an IP against), else a DNS one."""
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def needs_renewal(cert: x509.Certificate, now: dt.datetime) -> bool:
    """Expired, not yet valid, or within RENEW_MARGIN of its end."""
    return not (cert.not_valid_before_utc <= now < cert.not_valid_after_utc - RENEW_MARGIN)


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """PKCS#8, unencrypted: the file's mode (0600) protects it, as for every secret here."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _read_cert(path: Path) -> x509.Certificate | None:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (FileNotFoundError, ValueError):
        return None


def _read_key(path: Path) -> ec.EllipticCurvePrivateKey | None:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (FileNotFoundError, ValueError, TypeError):
        return None
    return key if isinstance(key, ec.EllipticCurvePrivateKey) else None


def tls_files(secrets: Path) -> TlsFiles:
    return TlsFiles(ca=secrets / CA_FILE, broker_keystore=secrets / BROKER_KEYSTORE_FILE)


def ensure_tls(secrets: Path, now: dt.datetime | None = None) -> tuple[TlsFiles, list[str]]:
    """The CA and the brokers' keystore in ``secrets``, made or renewed as needed.

    Returns the files and what was (re)made, for the progress line. A renewed CA means a new
    broker certificate too, and clients pick up the new ca.pem on their next start.
    """
    now = now or dt.datetime.now(dt.UTC)
    files = tls_files(secrets)
    made: list[str] = []
    ca_cert, ca_key = _read_cert(files.ca), _read_key(secrets / CA_KEY_FILE)
    if ca_cert is None or ca_key is None or needs_renewal(ca_cert, now):
        ca_key, ca_cert = issue_ca(now)
        write_secret(secrets / CA_KEY_FILE, key_pem(ca_key))
        write_secret(files.ca, cert_pem(ca_cert))
        made.append("CA")
    broker_cert = _read_cert(files.broker_keystore)
    if (
        made
        or broker_cert is None
        or not _issued_by(broker_cert, ca_cert)
        or needs_renewal(broker_cert, now)
    ):
        key, cert = issue_certificate(ca_key, ca_cert, BROKER_NAME, now)
        # Key first, then the chain (leaf, CA): the layout Kafka's PEM keystore expects.
        write_secret(files.broker_keystore, key_pem(key) + cert_pem(cert) + cert_pem(ca_cert))
        made.append(f"{BROKER_NAME} certificate")
    return files, made


def _issued_by(cert: x509.Certificate, ca_cert: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True
