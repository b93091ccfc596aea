"""A self-signed certificate for the emulator's TLS gRPC port, made at start.

Google's gRPC clients open TLS channels. Served with this certificate and trusted through gRPC's own
``GRPC_DEFAULT_SSL_ROOTS_FILE_PATH`` (read by gRPC's C core, so Python's clients, and by grpc-js, so
Node's; tested with both), an unchanged client reaches the emulator with nothing but its endpoint and
anonymous credentials. The key lives in memory only; nothing secret is in the certificate.
"""

from __future__ import annotations

import datetime as dt
import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

_VALID = dt.timedelta(days=30)


def self_signed(host: str) -> tuple[bytes, bytes]:
    """(private key PEM, certificate PEM) for ``localhost``, the loopback addresses and ``host``."""
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        extra: x509.GeneralName = x509.DNSName(host)
    else:
        extra = x509.IPAddress(address)
    if extra not in names:
        names.append(extra)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Cloud Run emulator (local)")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALID)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)
