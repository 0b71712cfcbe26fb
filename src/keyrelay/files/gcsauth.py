"""GCS credentials: a self-signed JWT (Google AIP-4111) made from the source's service account key.

Google's storage API accepts a JWT signed with a service account key as a bearer token, so no token endpoint
is called: the `token_uri`, `gcs_base_url` and `disable_oauth` members of the JSON are ignored (an endpoint
comes only from the source's `endpoint_url`, which is SSRF-checked). The token carries the read-only storage
scope, whatever the service account itself may do, and lives one hour; obstore asks for a new one before then.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from keyrelay import boundedjson
from keyrelay.errors import UpstreamAuthFailed

if TYPE_CHECKING:
    from obstore.store import GCSCredential

SCOPE = "https://www.googleapis.com/auth/devstorage.read_only"
LIFETIME_S = 3600
REFRESH_EARLY_S = 300
_INVALID = "The source's service account JSON is not usable"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _parse(raw: object) -> tuple[str, str | None, rsa.RSAPrivateKey]:
    try:
        info = boundedjson.loads(raw) if isinstance(raw, str) else None
        if not isinstance(info, dict):
            raise ValueError
        email, key_id, pem = info.get("client_email"), info.get("private_key_id"), info.get("private_key")
        if not isinstance(email, str) or not email or not isinstance(pem, str):
            raise ValueError
        key = serialization.load_pem_private_key(pem.encode(), password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError
    except (ValueError, TypeError, UnsupportedAlgorithm):  # never echo the library's message: it may quote key material
        raise UpstreamAuthFailed(_INVALID) from None
    return email, key_id if isinstance(key_id, str) and key_id else None, key


def make_token(email: str, key_id: str | None, key: rsa.RSAPrivateKey, now: float) -> str:
    header: dict[str, Any] = {"alg": "RS256", "typ": "JWT"}
    if key_id:
        header["kid"] = key_id
    claims = {"iss": email, "sub": email, "scope": SCOPE, "iat": int(now), "exp": int(now) + LIFETIME_S}
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{_b64(signature)}"


def sanitized(raw: object) -> str:
    """The service account JSON reduced to the members obstore needs (no endpoint, no token URI, no flags)."""
    email, key_id, key = _parse(raw)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    return json.dumps({"type": "service_account", "client_email": email, "private_key_id": key_id or "",
                       "private_key": pem})


def signer(raw: object, clock: Callable[[], float] = time.time) -> Callable[[], GCSCredential]:
    """An obstore `credential_provider` for the service account JSON `raw` (validated now, not at first use)."""
    email, key_id, key = _parse(raw)

    def provide() -> GCSCredential:
        now = clock()
        expires = datetime.fromtimestamp(now + LIFETIME_S - REFRESH_EARLY_S, tz=UTC)
        return {"token": make_token(email, key_id, key, now), "expires_at": expires}

    return provide
