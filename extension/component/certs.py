"""The CA and the per-cache server certificates, made with ``cryptography``. Pure: no files, no network.

As the Gardener extension does: one CA (``ca-extension-registry-cache``, 730 days) and per TLS cache a
server certificate (90 days) for the Service's DNS names and its cluster IP, renewed before it expires.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from extension.constants import CA_NAME

CA_VALIDITY = dt.timedelta(days=730)
SERVER_VALIDITY = dt.timedelta(days=90)
# Renew when less than this share of the validity is left (Gardener's secrets manager renews at 80%).
RENEW_REMAINING_FRACTION = 0.2


@dataclass(frozen=True)
class KeyPair:
    cert_pem: str
    key_pem: str

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem.encode())


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _cert_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def generate_ca(common_name: str = CA_NAME, validity: dt.timedelta = CA_VALIDITY,
                now: dt.datetime | None = None) -> KeyPair:
    now = now or _now()
    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(_cert_pem(cert), _key_pem(key))


def service_dns_names(service: str, namespace: str) -> list[str]:
    """``DNSNamesForService``: the short and the qualified names of a Service."""
    return [service, f"{service}.{namespace}", f"{service}.{namespace}.svc",
            f"{service}.{namespace}.svc.cluster.local"]


def generate_server_cert(ca: KeyPair, common_name: str, dns_names: list[str], ip_addresses: list[str],
                         validity: dt.timedelta = SERVER_VALIDITY, now: dt.datetime | None = None) -> KeyPair:
    now = now or _now()
    ca_cert = ca.certificate
    ca_key = serialization.load_pem_private_key(ca.key_pem.encode(), password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"the CA key is a {type(ca_key).__name__}, expected an elliptic-curve key")
    key = _new_key()
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=True, key_cert_sign=False,
                                     crl_sign=False, content_commitment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False),
                       critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return KeyPair(_cert_pem(cert), _key_pem(key))


def renewal_time(pair: KeyPair) -> dt.datetime:
    """When less than 20% of the certificate's validity is left."""
    cert = pair.certificate
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    return end - (end - start) * RENEW_REMAINING_FRACTION


def needs_renewal(pair: KeyPair, now: dt.datetime | None = None) -> bool:
    """True when less than 20% of the certificate's validity is left."""
    return (now or _now()) > renewal_time(pair)


def covers(pair: KeyPair, ca: KeyPair, dns_names: list[str], ip_addresses: list[str]) -> bool:
    """Whether a server certificate was issued by ``ca`` for exactly these names and addresses."""
    cert = pair.certificate
    if cert.issuer != ca.certificate.subject:
        return False
    try:
        cert.verify_directly_issued_by(ca.certificate)
    except (InvalidSignature, ValueError, TypeError):  # another key, or a kind of key that cannot have signed it
        return False
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    have_dns = sorted(san.get_values_for_type(x509.DNSName))
    have_ips = sorted(str(ip) for ip in san.get_values_for_type(x509.IPAddress))
    return have_dns == sorted(dns_names) and have_ips == sorted(str(ipaddress.ip_address(i)) for i in ip_addresses)


def generate_client_cert(ca: KeyPair, common_name: str, organization: str | None = None,
                         validity: dt.timedelta = SERVER_VALIDITY, now: dt.datetime | None = None) -> KeyPair:
    """A client certificate (``clientAuth``) for ``CN=common_name[, O=organization]`` issued by ``ca``."""
    now = now or _now()
    ca_key = serialization.load_pem_private_key(ca.key_pem.encode(), password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"the CA key is a {type(ca_key).__name__}, expected an elliptic-curve key")
    key = _new_key()
    attrs = ([x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization)] if organization else []) + \
        [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attrs))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return KeyPair(_cert_pem(cert), _key_pem(key))
