"""The one exception hierarchy of the gateway, and its single mapping to gRPC statuses.

    DelosError                              (operational: a request that cannot be served)
    ├── InvalidRequest                      INVALID            the client's request is wrong
    │   └── EmbeddingsNotSupported          INVALID            provider has no embeddings API
    ├── RequestTooLarge                     TOO_LARGE          over the maximum message size
    ├── NotFound                            NOT_FOUND
    │   ├── UnknownProvider
    │   ├── UnknownModel
    │   └── PromptNotFound
    ├── ProviderNotConfigured               NOT_CONFIGURED     known provider, no credentials
    ├── NoProvidersConfigured               UNAVAILABLE
    ├── Unauthenticated                     UNAUTHENTICATED    missing or wrong client key
    ├── AllCandidatesFailed                 kind of the most telling underlying error
    └── ProviderError                       (something went wrong at or on the way to a provider)
        ├── UpstreamAuthenticationError     NOT_CONFIGURED     401/403: the gateway's key
        ├── UpstreamRejected                INVALID            400/413/422: upstream refused input
        ├── UnsupportedByProvider           INVALID            no exact native form for a setting
        │   └── UpstreamModelNotFound       NOT_FOUND          404 on a model
        ├── UpstreamRateLimited             RATE_LIMITED       429, with Retry-After
        ├── LocalRateLimited                RATE_LIMITED       our limiter would wait too long
        ├── ConnectionsBusy                 RATE_LIMITED       every connection to it is in use
        ├── CircuitOpen                     UNAVAILABLE        breaker is cutting the provider off
        ├── UpstreamUnavailable             UNAVAILABLE        5xx, 529, connect/read failures
        │   └── UpstreamTimeout             UNAVAILABLE        the provider took too long
        ├── UpstreamProtocolError           UNAVAILABLE        malformed, truncated, error event
        └── OutputSchemaViolation           UNAVAILABLE        the answer did not fit the schema

Each error carries a protocol-neutral :class:`ErrorKind` (as h11's ``ProtocolError`` carries a
status hint); the gRPC edge maps kinds to statuses in one table
(:mod:`delos.runtime.grpc.convert`). Programming errors (anything else) become INTERNAL with a
generic message: they are logged with their traceback server-side and never shown to the client.
Messages never contain secrets: the edge passes every message through a redactor before it leaves
the process.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import ClassVar

__all__ = [
    "AllCandidatesFailed",
    "CircuitOpen",
    "ConnectionsBusy",
    "DelosError",
    "EmbeddingsNotSupported",
    "ErrorKind",
    "InvalidRequest",
    "LocalRateLimited",
    "NoProvidersConfigured",
    "NotFound",
    "OutputSchemaViolation",
    "PromptNotFound",
    "ProviderError",
    "ProviderNotConfigured",
    "RequestTooLarge",
    "Unauthenticated",
    "UnknownModel",
    "UnknownProvider",
    "UnsupportedByProvider",
    "UpstreamAuthenticationError",
    "UpstreamModelNotFound",
    "UpstreamProtocolError",
    "UpstreamRateLimited",
    "UpstreamRejected",
    "UpstreamTimeout",
    "UpstreamUnavailable",
    "kind_of",
]


class ErrorKind(enum.Enum):
    """What kind of failure an error is, whatever protocol reports it."""

    INVALID = "invalid"
    TOO_LARGE = "too_large"
    NOT_FOUND = "not_found"
    NOT_CONFIGURED = "not_configured"
    UNAUTHENTICATED = "unauthenticated"
    RATE_LIMITED = "rate_limited"
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"


class DelosError(Exception):
    """An operational error: the request cannot be served, and the message says why."""

    kind: ClassVar[ErrorKind] = ErrorKind.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(DelosError):
    kind = ErrorKind.INVALID


class EmbeddingsNotSupported(InvalidRequest):
    pass


class RequestTooLarge(DelosError):
    kind = ErrorKind.TOO_LARGE


class NotFound(DelosError):
    kind = ErrorKind.NOT_FOUND


class UnknownProvider(NotFound):
    pass


class UnknownModel(NotFound):
    pass


class PromptNotFound(NotFound):
    pass


class ProviderNotConfigured(DelosError):
    kind = ErrorKind.NOT_CONFIGURED


class NoProvidersConfigured(DelosError):
    kind = ErrorKind.UNAVAILABLE


class Unauthenticated(DelosError):
    kind = ErrorKind.UNAUTHENTICATED


class ProviderError(DelosError):
    """A failure at, or on the way to, one provider.

    ``retryable``: another attempt (same or other provider) may succeed.
    ``breaker_failure``: the outcome is evidence that the provider is unhealthy.
    """

    kind = ErrorKind.UNAVAILABLE
    retryable: ClassVar[bool] = True
    breaker_failure: ClassVar[bool] = True

    def __init__(
        self,
        provider: str,
        message: str,
        *,
        http_status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{provider}: {message}")
        self.provider = provider
        self.detail = message
        self.http_status = http_status
        #: Seconds the provider asked us to wait (Retry-After), when it said.
        self.retry_after = retry_after


class UpstreamAuthenticationError(ProviderError):
    kind = ErrorKind.NOT_CONFIGURED
    retryable = True  # another provider may hold a valid key
    breaker_failure = False


class UpstreamRejected(ProviderError):
    kind = ErrorKind.INVALID
    retryable = False
    breaker_failure = False


class UnsupportedByProvider(ProviderError):
    """The provider has no exact native form for a setting of the request (``setting`` names
    it): raised before anything is sent; the router skips the candidate as unable and tries the
    next. Never a silent drop."""

    kind = ErrorKind.INVALID
    retryable = True  # another provider may express it
    breaker_failure = False

    def __init__(self, provider: str, setting: str, message: str) -> None:
        super().__init__(provider, f"{setting}: {message}")
        self.setting = setting


class UpstreamModelNotFound(UpstreamRejected):
    kind = ErrorKind.NOT_FOUND
    retryable = True  # another provider may serve the same family


class UpstreamRateLimited(ProviderError):
    kind = ErrorKind.RATE_LIMITED
    breaker_failure = False


class LocalRateLimited(ProviderError):
    kind = ErrorKind.RATE_LIMITED
    breaker_failure = False


class ConnectionsBusy(ProviderError):
    """Every connection this worker may hold to the provider stayed in use for the allowed wait:
    the gateway's own limit, not the provider's health."""

    kind = ErrorKind.RATE_LIMITED
    breaker_failure = False


class CircuitOpen(ProviderError):
    breaker_failure = False


class UpstreamUnavailable(ProviderError):
    pass


class UpstreamTimeout(UpstreamUnavailable):
    pass


class UpstreamProtocolError(ProviderError):
    pass


class OutputSchemaViolation(ProviderError):
    """The answer does not conform to the requested ``output_schema``; another candidate may."""

    breaker_failure = False


class AllCandidatesFailed(DelosError):
    """Every candidate provider failed; the kind is that of the most telling failure."""

    def __init__(self, errors: Sequence[DelosError]) -> None:
        self.errors = tuple(errors)
        distinct = list(dict.fromkeys(e.message for e in self.errors))
        if len(distinct) == 1:
            message = distinct[0]
            if len(self.errors) > 1:
                message += f" ({len(self.errors)} attempts)"
        else:
            message = "every attempt failed: " + "; ".join(distinct)
        super().__init__(message)

    @property
    def combined_kind(self) -> ErrorKind:
        kinds = {kind_of(e) for e in self.errors}
        if len(kinds) == 1:
            return kinds.pop()
        # Mixed causes: a transient one means "try again later".
        for preferred in (ErrorKind.UNAVAILABLE, ErrorKind.RATE_LIMITED):
            if preferred in kinds:
                return preferred
        return kind_of(self.errors[-1])


def kind_of(error: DelosError) -> ErrorKind:
    """The kind a client is told for ``error`` (of every underlying error, when several)."""
    if isinstance(error, AllCandidatesFailed):
        return error.combined_kind
    return type(error).kind
