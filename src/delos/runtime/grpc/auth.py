"""Client keys: who may call the gateway, checked before any handler runs.

Keys come from ``DELOS_RUNTIME_API_KEYS`` (``name:key`` pairs, comma separated) and from
``DELOS_RUNTIME_API_KEYS_FILE`` (one ``name:sha256-hex-of-key`` per line, so plaintext keys need
not sit on disk). Only SHA-256 digests are kept. A client sends ``authorization: Bearer <key>``;
:func:`install_auth` checks it in grpclib's ``RecvRequest`` event, which runs in the request's
own task just before the handler, so the name it stores in a context variable is what
:func:`current_client` returns inside that handler.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import re
from collections.abc import Collection, Iterable
from contextvars import ContextVar
from hmac import compare_digest
from pathlib import Path
from typing import Final

from grpclib.const import Status
from grpclib.events import RecvRequest, listen
from grpclib.exceptions import GRPCError
from grpclib.server import Server
from pydantic import SecretStr

from delos.runtime.config import ConfigError
from delos.runtime.errors import Unauthenticated
from delos.runtime.observability import ANONYMOUS

__all__ = [
    "DEFAULT_OPEN_METHODS",
    "ClientKeys",
    "current_client",
    "install_auth",
    "warn_if_exposed",
]


#: Methods anyone may call: health checks (load balancers hold no key) and reflection.
DEFAULT_OPEN_METHODS: Final = frozenset(
    {
        "/delos.runtime.v1.RuntimeService/Health",
        "/grpc.health.v1.Health/Check",
        "/grpc.health.v1.Health/Watch",
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    }
)

_KEYS_VARIABLE: Final = "DELOS_RUNTIME_API_KEYS"
_FILE_VARIABLE: Final = "DELOS_RUNTIME_API_KEYS_FILE"
# Client names become metric labels and log fields: keep them plain.
_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")
_NAME_RULE: Final = "a client name is 1-64 letters, digits, '.', '_' or '-'"
_HEX_DIGEST: Final = re.compile(r"[0-9a-fA-F]{64}")

_current_client: ContextVar[str | None] = ContextVar("delos_current_client", default=None)


def current_client() -> str | None:
    """The client-key name of the RPC being served; None when keys are off or the method open."""
    return _current_client.get()


class ClientKeys:
    """The accepted client keys, as SHA-256 digests with the name of each."""

    __slots__ = ("_entries",)

    def __init__(self, entries: Iterable[tuple[str, bytes]] = ()) -> None:
        """``entries``: (client name, SHA-256 digest of the key) pairs."""
        self._entries = tuple(entries)

    @classmethod
    def from_settings(
        cls, api_keys: SecretStr | str | None, api_keys_file: str | None
    ) -> ClientKeys:
        """Keys from the variable and the file (both may be set; both may be None).

        Raises :class:`ConfigError` naming the variable (and file line) at fault, never a key.
        """
        entries: list[tuple[str, bytes]] = []
        if isinstance(api_keys, SecretStr):
            api_keys = api_keys.get_secret_value()
        if api_keys:
            entries.extend(_parse_pairs(api_keys))
        if api_keys_file:
            entries.extend(_parse_file(api_keys_file))
        seen: set[bytes] = set()
        for _, digest in entries:
            if digest in seen:
                raise ConfigError(
                    f"{_KEYS_VARIABLE} / {_FILE_VARIABLE}: the same key is listed twice"
                )
            seen.add(digest)
        return cls(entries)

    @property
    def enabled(self) -> bool:
        """True when at least one key is configured, so RPCs need one."""
        return bool(self._entries)

    @property
    def names(self) -> frozenset[str]:
        return frozenset(name for name, _ in self._entries)

    def check(self, authorization: str | None) -> str:
        """The name of the client whose key is in ``authorization`` (``Bearer <key>``).

        Returns :data:`ANONYMOUS` when no key is configured. Raises :class:`Unauthenticated`
        ("missing client key" / "invalid client key").
        """
        if not self._entries:
            return ANONYMOUS
        if authorization is None or not authorization.strip():
            raise Unauthenticated("missing client key")
        scheme, _, key = authorization.strip().partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise Unauthenticated("invalid client key")
        digest = _digest_of(key)
        found: str | None = None
        # Every stored digest is compared, match or not: the time taken must not tell how
        # many keys precede the right one.
        for name, stored in self._entries:
            if compare_digest(stored, digest) and found is None:
                found = name
        if found is None:
            raise Unauthenticated("invalid client key")
        return found

    def __repr__(self) -> str:
        return f"ClientKeys({len(self._entries)} keys)"


def _digest_of(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def _parse_pairs(text: str) -> list[tuple[str, bytes]]:
    entries = []
    for number, entry in enumerate(text.split(","), start=1):
        entry = entry.strip()
        if not entry:
            continue
        name, colon, key = entry.partition(":")
        name, key = name.strip(), key.strip()
        if not colon or not key:
            raise ConfigError(f"{_KEYS_VARIABLE}: entry {number} is not name:key")
        if not _NAME.fullmatch(name):
            raise ConfigError(f"{_KEYS_VARIABLE}: entry {number}: {_NAME_RULE}")
        entries.append((name, _digest_of(key)))
    return entries


def _parse_file(path: str) -> list[tuple[str, bytes]]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
        raise ConfigError(f"{_FILE_VARIABLE}: cannot read {path}: {reason}") from None
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.partition("#")[0].strip()
        if not line:
            continue
        name, colon, digest = line.partition(":")
        name, digest = name.strip(), digest.strip()
        where = f"{_FILE_VARIABLE} ({path}) line {number}"
        if not colon or not _HEX_DIGEST.fullmatch(digest):
            raise ConfigError(f"{where}: expected name:sha256-hex (64 hex digits)")
        if not _NAME.fullmatch(name):
            raise ConfigError(f"{where}: {_NAME_RULE}")
        entries.append((name, bytes.fromhex(digest)))
    return entries


def install_auth(
    server: Server,
    keys: ClientKeys,
    *,
    open_methods: Collection[str] = DEFAULT_OPEN_METHODS,
) -> None:
    """Require a client key on every method of ``server`` but ``open_methods``.

    A call without a valid key ends with UNAUTHENTICATED before its handler runs. The
    ``authorization`` header is removed from the metadata handlers see, so no handler can log
    it. Does nothing when ``keys`` is empty.
    """
    if not keys.enabled:
        return
    open_paths = frozenset(open_methods)

    async def authenticate(event: RecvRequest) -> None:
        headers = event.metadata.popall("authorization", [])
        if event.method_name in open_paths:
            return
        # Two authorization headers are ambiguous: a proxy added one; refuse rather than guess.
        header = headers[0] if len(headers) == 1 and isinstance(headers[0], str) else None
        if header is None and headers:
            raise GRPCError(Status.UNAUTHENTICATED, "invalid client key")
        try:
            name = keys.check(header)
        except Unauthenticated as error:
            raise GRPCError(Status.UNAUTHENTICATED, error.message) from None
        _current_client.set(name)

    listen(server, RecvRequest, authenticate)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name, or "" (every interface): assume reachable


def warn_if_exposed(host: str, keys: ClientKeys, logger: logging.Logger) -> bool:
    """Log a WARNING when serving on a non-loopback ``host`` without client keys.

    Returns True when it warned.
    """
    if keys.enabled or _is_loopback(host):
        return False
    logger.warning(
        "serving on %s without client keys: anyone who can reach this address can spend the "
        "gateway's provider credits; set %s or %s",
        host or "every interface",
        _KEYS_VARIABLE,
        _FILE_VARIABLE,
    )
    return True
