"""AWS Signature Version 4 for the Bedrock adapter, done by botocore's signer.

Signing is pure CPU work (a few HMACs and one SHA-256 of the body), so it runs inline on any
event loop. It reads the wall clock: AWS rejects signatures more than five minutes off real time,
so no other clock would do. Each request is signed when it is sent, over the exact body bytes that
go on the wire.
"""

from __future__ import annotations

from collections.abc import Mapping

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

__all__ = ["RequestSigner"]


class RequestSigner:
    """Signs requests for one AWS service in one region with fixed credentials.

    ``session_token`` is set for temporary credentials (``ASIA…`` key ids); it is sent as
    ``X-Amz-Security-Token`` and covered by the signature.
    """

    def __init__(
        self,
        *,
        access_key_id: str,
        secret_access_key: str,
        session_token: str | None,
        region: str,
        service: str = "bedrock",
    ) -> None:
        # Built once: the credentials object and the signer hold no per-request state.
        credentials = Credentials(access_key_id, secret_access_key, session_token or None)
        self._auth = SigV4Auth(credentials, service, region)
        self.region = region
        self.service = service

    def sign(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes
    ) -> dict[str, str]:
        """``headers`` plus ``X-Amz-Date``, ``Authorization`` and the session token if any.

        Every header given is signed along with ``host`` (taken from ``url``), so pass only
        headers the HTTP client will send unchanged. ``url`` must be the exact URL requested,
        percent-encoding included.
        """
        request = AWSRequest(method=method, url=url, headers=dict(headers), data=body)
        self._auth.add_auth(request)
        return {str(name): str(value) for name, value in request.headers.items()}
