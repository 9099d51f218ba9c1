from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from grpclib.client import Channel
from grpclib.health.service import Health
from grpclib.health.v1.health_grpc import HealthStub
from grpclib.health.v1.health_pb2 import HealthCheckRequest, HealthCheckResponse
from grpclib.server import Server

from delos.runtime.config import ConfigError
from delos.runtime.grpc.tls import server_ssl_context
from tests.observability.servers import CertificatePair, serving, write_self_signed


def client_context(certificate: CertificatePair) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(certificate.cert))
    context.set_alpn_protocols(["h2"])
    return context


@pytest.mark.anyio
async def test_a_grpc_call_round_trips_over_tls(certificate: CertificatePair) -> None:
    context = server_ssl_context(str(certificate.cert), str(certificate.key))
    assert context is not None
    assert context.minimum_version is ssl.TLSVersion.TLSv1_2
    async with serving(Server([Health()]), ssl=context) as port:
        channel = Channel("127.0.0.1", port, ssl=client_context(certificate))
        try:
            reply = await HealthStub(channel).Check(HealthCheckRequest())
        finally:
            channel.close()
    assert reply.status == HealthCheckResponse.SERVING


@pytest.mark.anyio
async def test_a_client_that_does_not_trust_the_certificate_cannot_call(
    certificate: CertificatePair, tmp_path: Path
) -> None:
    context = server_ssl_context(str(certificate.cert), str(certificate.key))
    stranger = write_self_signed(tmp_path, stem="stranger")
    async with serving(Server([Health()]), ssl=context) as port:
        channel = Channel("127.0.0.1", port, ssl=client_context(stranger))
        try:
            with pytest.raises(ssl.SSLCertVerificationError):
                await HealthStub(channel).Check(HealthCheckRequest())
        finally:
            channel.close()


def test_no_files_means_plaintext() -> None:
    assert server_ssl_context(None, None) is None


@pytest.mark.parametrize("given", ["cert", "key"])
def test_one_file_without_the_other_is_refused(certificate: CertificatePair, given: str) -> None:
    cert = str(certificate.cert) if given == "cert" else None
    key = str(certificate.key) if given == "key" else None
    with pytest.raises(ConfigError, match="DELOS_RUNTIME_TLS_CERT and DELOS_RUNTIME_TLS_KEY"):
        server_ssl_context(cert, key)


@pytest.mark.parametrize("missing", ["cert", "key"])
def test_a_missing_file_names_its_variable(
    certificate: CertificatePair, tmp_path: Path, missing: str
) -> None:
    absent = str(tmp_path / "absent.pem")
    cert = absent if missing == "cert" else str(certificate.cert)
    key = absent if missing == "key" else str(certificate.key)
    variable = "DELOS_RUNTIME_TLS_CERT" if missing == "cert" else "DELOS_RUNTIME_TLS_KEY"
    with pytest.raises(ConfigError, match=rf"^{variable}: cannot read .*absent.pem"):
        server_ssl_context(cert, key)


def test_a_file_that_is_not_a_certificate_names_the_cert_variable(
    certificate: CertificatePair, tmp_path: Path
) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    with pytest.raises(
        ConfigError, match=r"^DELOS_RUNTIME_TLS_CERT: .* not a valid PEM certificate"
    ):
        server_ssl_context(str(garbage), str(certificate.key))
    with pytest.raises(ConfigError, match=r"^DELOS_RUNTIME_TLS_CERT: .* holds no PEM certificate"):
        server_ssl_context(str(certificate.key), str(certificate.key))


def test_a_bad_key_names_the_key_variable(certificate: CertificatePair, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.key"
    garbage.write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    with pytest.raises(
        ConfigError, match=r"^DELOS_RUNTIME_TLS_KEY: .* not a valid PEM private key"
    ):
        server_ssl_context(str(certificate.cert), str(garbage))
    with pytest.raises(ConfigError, match=r"^DELOS_RUNTIME_TLS_KEY: .* holds no PEM private key"):
        server_ssl_context(str(certificate.cert), str(certificate.cert))


def test_the_key_of_another_certificate_is_refused(
    certificate: CertificatePair, tmp_path: Path
) -> None:
    other = write_self_signed(tmp_path, stem="other")
    with pytest.raises(ConfigError, match=r"^DELOS_RUNTIME_TLS_KEY: .* not the private key of"):
        server_ssl_context(str(certificate.cert), str(other.key))


def test_an_encrypted_key_is_refused_without_prompting(
    certificate: CertificatePair, tmp_path: Path
) -> None:
    key = serialization.load_pem_private_key(certificate.key.read_bytes(), password=None)
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    with pytest.raises(ConfigError, match=r"^DELOS_RUNTIME_TLS_KEY: .* is encrypted"):
        server_ssl_context(str(certificate.cert), str(encrypted))
