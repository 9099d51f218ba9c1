"""The one exception hierarchy of the gateway, and its single mapping to gRPC statuses.

    DelosError                              (operational: a request that cannot be served)
    ├── InvalidRequest                      INVALID_ARGUMENT   the client's request is wrong
    │   └── EmbeddingsNotSupported          INVALID_ARGUMENT   provider has no embeddings API
    ├── RequestTooLarge                     RESOURCE_EXHAUSTED over the maximum message size
    ├── NotFound                            NOT_FOUND
    │   ├── UnknownProvider
    │   ├── UnknownModel
    │   └── PromptNotFound
    ├── ProviderNotConfigured               FAILED_PRECONDITION  known provider, no credentials
    ├── NoProvidersConfigured               UNAVAILABLE
    ├── Unauthenticated                     UNAUTHENTICATED    missing or wrong client key
    ├── DeadlineExceeded                    DEADLINE_EXCEEDED
    ├── AllCandidatesFailed                 status of the most telling underlying error
    └── ProviderError                       (something went wrong at or on the way to a provider)
        ├── UpstreamAuthenticationError     FAILED_PRECONDITION  401/403: the gateway's key
        ├── UpstreamRejected                INVALID_ARGUMENT   400/413/422: upstream refused input
        │   └── UpstreamModelNotFound       NOT_FOUND          404 on a model
        ├── UpstreamRateLimited             RESOURCE_EXHAUSTED 429, with Retry-After
        ├── LocalRateLimited                RESOURCE_EXHAUSTED our limiter would wait too long
        ├── CircuitOpen                     UNAVAILABLE        breaker is cutting the provider off
        ├── UpstreamUnavailable             UNAVAILABLE        5xx, 529, connect/read failures
        │   └── UpstreamTimeout             UNAVAILABLE        the provider took too long
        ├── UpstreamProtocolError           UNAVAILABLE        malformed, truncated, error event
        └── OutputSchemaViolation           UNAVAILABLE        the answer did not fit the schema

Programming errors (anything else) become INTERNAL with a generic message: they are logged with
their traceback server-side and never shown to the client. Messages never contain secrets: the
service passes every message through a redactor before it leaves the process.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from grpclib.const import Status

__all__ = [
    "AllCandidatesFailed",
    "CircuitOpen",
    "DeadlineExceeded",
    "DelosError",
    "EmbeddingsNotSupported",
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
    "UpstreamAuthenticationError",
    "UpstreamModelNotFound",
    "UpstreamProtocolError",
    "UpstreamRateLimited",
    "UpstreamRejected",
    "UpstreamTimeout",
    "UpstreamUnavailable",
    "grpc_status_of",
]


class DelosError(Exception):
    """An operational error: the request cannot be served, and the message says why."""

    status: ClassVar[Status] = Status.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(DelosError):
    status = Status.INVALID_ARGUMENT


class EmbeddingsNotSupported(InvalidRequest):
    pass


class RequestTooLarge(DelosError):
    status = Status.RESOURCE_EXHAUSTED


class NotFound(DelosError):
    status = Status.NOT_FOUND


class UnknownProvider(NotFound):
    pass


class UnknownModel(NotFound):
    pass


class PromptNotFound(NotFound):
    pass


class ProviderNotConfigured(DelosError):
    status = Status.FAILED_PRECONDITION


class NoProvidersConfigured(DelosError):
    status = Status.UNAVAILABLE


class Unauthenticated(DelosError):
    status = Status.UNAUTHENTICATED


class DeadlineExceeded(DelosError):
    status = Status.DEADLINE_EXCEEDED


class ProviderError(DelosError):
    """A failure at, or on the way to, one provider.

    ``retryable``: another attempt (same or other provider) may succeed.
    ``breaker_failure``: the outcome is evidence that the provider is unhealthy.
    """

    status = Status.UNAVAILABLE
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
    status = Status.FAILED_PRECONDITION
    retryable = True  # another provider may hold a valid key
    breaker_failure = False


class UpstreamRejected(ProviderError):
    status = Status.INVALID_ARGUMENT
    retryable = False
    breaker_failure = False


class UpstreamModelNotFound(UpstreamRejected):
    status = Status.NOT_FOUND
    retryable = True  # another provider may serve the same family


class UpstreamRateLimited(ProviderError):
    status = Status.RESOURCE_EXHAUSTED
    breaker_failure = False


class LocalRateLimited(ProviderError):
    status = Status.RESOURCE_EXHAUSTED
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
    """Every candidate provider failed; the status is that of the most telling failure."""

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
    def grpc_status(self) -> Status:
        statuses = {grpc_status_of(e) for e in self.errors}
        if len(statuses) == 1:
            return statuses.pop()
        # Mixed causes: a transient one means "try again later".
        for preferred in (Status.UNAVAILABLE, Status.RESOURCE_EXHAUSTED):
            if preferred in statuses:
                return preferred
        return grpc_status_of(self.errors[-1])


def grpc_status_of(error: DelosError) -> Status:
    """The gRPC status a client sees for ``error``: the one table of the project."""
    if isinstance(error, AllCandidatesFailed):
        return error.grpc_status
    return type(error).status
