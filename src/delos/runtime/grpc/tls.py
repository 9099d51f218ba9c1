"""TLS for the gRPC server: an ``ssl.SSLContext`` fit for HTTP/2, from two PEM files.

gRPC runs over HTTP/2, which clients select with ALPN (``h2``) and which forbids TLS below 1.2.
Files are checked at start-up, one at a time, so a mistake is reported against the variable
that holds it.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Final

from delos.runtime.config import ConfigError

__all__ = ["server_ssl_context"]

_CERT_VARIABLE: Final = "DELOS_RUNTIME_TLS_CERT"
_KEY_VARIABLE: Final = "DELOS_RUNTIME_TLS_KEY"
# Forward-secret AEAD suites only (TLS 1.2); TLS 1.3 suites are not affected by set_ciphers.
# HTTP/2 (RFC 7540, appendix A) blocklists the rest.
_CIPHERS: Final = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20"


def server_ssl_context(cert_path: str | None, key_path: str | None) -> ssl.SSLContext | None:
    """The server's TLS context, or None when neither file is given (plaintext).

    ``cert_path``: PEM certificate chain, leaf first; ``key_path``: its unencrypted PEM private
    key. Raises :class:`ConfigError` naming the variable when a file is missing, unreadable or
    invalid, or when only one of the two is given.
    """
    if cert_path is None and key_path is None:
        return None
    if cert_path is None or key_path is None:
        raise ConfigError(f"{_CERT_VARIABLE} and {_KEY_VARIABLE}: set both, or neither")
    cert_text = _read(cert_path, _CERT_VARIABLE)
    key_text = _read(key_path, _KEY_VARIABLE)
    if "-----BEGIN CERTIFICATE-----" not in cert_text:
        raise ConfigError(f"{_CERT_VARIABLE}: {cert_path} holds no PEM certificate")
    if "PRIVATE KEY-----" not in key_text:
        raise ConfigError(f"{_KEY_VARIABLE}: {key_path} holds no PEM private key")
    if "ENCRYPTED" in key_text:
        raise ConfigError(f"{_KEY_VARIABLE}: {key_path} is encrypted; give an unencrypted key")

    # OpenSSL reports a bad certificate and a bad key alike ("PEM lib"): parse the certificate
    # alone first, so the message can name the right variable.
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        probe.load_verify_locations(cafile=cert_path)
    except ssl.SSLError:
        raise ConfigError(f"{_CERT_VARIABLE}: {cert_path} is not a valid PEM certificate") from None

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION
    context.set_ciphers(_CIPHERS)
    context.set_alpn_protocols(["h2"])
    try:
        # The password callback stops OpenSSL from prompting on the terminal for a key that
        # is encrypted in a way the check above missed.
        context.load_cert_chain(cert_path, key_path, password=_no_password)
    except ssl.SSLError as error:
        if error.reason == "KEY_VALUES_MISMATCH":
            raise ConfigError(
                f"{_KEY_VARIABLE}: {key_path} is not the private key of the certificate in "
                f"{_CERT_VARIABLE}"
            ) from None
        raise ConfigError(f"{_KEY_VARIABLE}: {key_path} is not a valid PEM private key") from None
    return context


def _read(path: str, variable: str) -> str:
    try:
        return Path(path).read_text(encoding="ascii", errors="replace")
    except OSError as error:
        raise ConfigError(f"{variable}: cannot read {path}: {error.strerror}") from None


def _no_password() -> bytes:
    return b""
