"""The SDK's one exception, and how every failure of a call becomes it.

Every failure of a call raises :class:`RuntimeClientError` with a gRPC status, its cause chained
(:func:`call_errors` does it, in one place): the server's own status for a gRPC error, and for
failures below gRPC the one table ``_TRANSPORT_FAILURES`` (deadline → ``DEADLINE_EXCEEDED``,
connection refused, reset, closed or garbled → ``UNAVAILABLE``, an answer that does not parse →
``INTERNAL``, anything else → ``UNKNOWN``). A stream the client cancelled when it was closed
fails with ``CANCELLED`` instead.

grpclib delivers its deadline and a lost connection by cancelling the calling task; each failure
withdraws that cancellation (:func:`withdrawn_grpclib_cancellations`), so that it does not leak
into the caller's cancel scopes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Container, Iterator
from typing import Any, Final

from google.protobuf.message import DecodeError
from grpclib.const import Status
from grpclib.exceptions import GRPCError, ProtocolError, StreamTerminatedError
from h2.exceptions import H2Error

__all__ = [
    "CLOSED_UNDER_STREAM",
    "RuntimeClientError",
    "call_errors",
    "withdrawn_grpclib_cancellations",
]

CLOSED_UNDER_STREAM: Final = "the client was closed while this stream was open"


class RuntimeClientError(Exception):
    """A call failed; ``status`` is the gRPC status and ``message`` says why.

    ``__cause__`` is the error it stands for: the server's ``GRPCError``, or the transport's
    ``TimeoutError``, ``ConnectionError``, ``StreamTerminatedError``, …
    """

    def __init__(self, status: Status, message: str) -> None:
        super().__init__(f"{status.name}: {message}")
        self.status = status
        self.message = message


#: How a failure below gRPC becomes a status: the first row whose types match wins (TimeoutError
#: is an OSError, so it comes first). grpclib reports its deadline as a TimeoutError; refused,
#: reset and broken connections (and DNS or TLS failures) are OSErrors; a connection closed under
#: a call is a StreamTerminatedError; a peer that does not speak HTTP/2 is an H2Error.
_TRANSPORT_FAILURES: Final[tuple[tuple[tuple[type[Exception], ...], Status, str], ...]] = (
    ((TimeoutError,), Status.DEADLINE_EXCEEDED, "no answer from {target} within the deadline"),
    ((StreamTerminatedError,), Status.UNAVAILABLE, "connection to {target} ended"),
    ((OSError, H2Error), Status.UNAVAILABLE, "connection to {target} failed"),
    ((ProtocolError, DecodeError), Status.INTERNAL, "malformed answer from {target}"),
)


def _transport_failure(error: Exception, target: str, timeout: float | None) -> RuntimeClientError:
    for types, status, template in _TRANSPORT_FAILURES:
        if isinstance(error, types):
            message = template.format(target=target)
            if status is Status.DEADLINE_EXCEEDED:
                return RuntimeClientError(
                    status, f"{message} ({timeout:g} s)" if timeout else message
                )
            return RuntimeClientError(status, f"{message}: {error or type(error).__name__}")
    return RuntimeClientError(Status.UNKNOWN, f"{type(error).__name__}: {error}")


@contextlib.contextmanager
def call_errors(
    target: str,
    timeout: float | None,
    stream: Any = None,
    cancelled_streams: Container[Any] = (),
) -> Iterator[None]:
    """Turn every failure of a call into :class:`RuntimeClientError`, cause chained.

    ``target`` and ``timeout`` (seconds) go into the message; ``stream`` is the call's grpclib
    stream, and a failure of one in ``cancelled_streams`` (those the client cancelled when it was
    closed) is ``CANCELLED``.
    """
    try:
        with withdrawn_grpclib_cancellations():
            yield
    except RuntimeClientError:
        raise
    except GRPCError as error:
        raise RuntimeClientError(error.status, error.message or "") from error
    except Exception as error:
        if stream is not None and stream in cancelled_streams:
            raise RuntimeClientError(Status.CANCELLED, CLOSED_UNDER_STREAM) from error
        raise _transport_failure(error, target, timeout) from error


@contextlib.contextmanager
def withdrawn_grpclib_cancellations() -> Iterator[None]:
    """Withdraw the cancellation requests grpclib leaves on the calling task.

    grpclib delivers its deadline and a lost connection by cancelling the task waiting on the
    call (``Task.cancel()``), then raises its own error in place of the CancelledError, and never
    calls ``Task.uncancel()``. The request it leaves would make the caller's next cancel scope
    (anyio, ``asyncio.TaskGroup``) take it for an outside cancellation and re-raise it.
    """
    task = asyncio.current_task()
    cancelling = task.cancelling() if task is not None else 0
    try:
        yield
    except Exception:
        while task is not None and task.cancelling() > cancelling:
            task.uncancel()
        raise
