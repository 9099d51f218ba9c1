"""Test helpers: a self-signed certificate, and a grpclib server on an ephemeral port."""

from __future__ import annotations

import datetime
import ipaddress
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from ssl import SSLContext

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpclib.server import Server


@dataclass(frozen=True)
class CertificatePair:
    cert: Path
    key: Path


def write_self_signed(directory: Path, stem: str = "server") -> CertificatePair:
    """A self-signed certificate for localhost and 127.0.0.1, valid for a day, in PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pair = CertificatePair(directory / f"{stem}.crt", directory / f"{stem}.key")
    pair.cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    pair.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return pair


@asynccontextmanager
async def serving(server: Server, *, ssl: SSLContext | None = None) -> AsyncIterator[int]:
    """Start ``server`` on an ephemeral loopback port for the block; yields the port."""
    listening = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listening.bind(("127.0.0.1", 0))
    port: int = listening.getsockname()[1]
    await server.start(sock=listening, ssl=ssl)
    try:
        yield port
    finally:
        server.close()
        await server.wait_closed()
