"""GCS tokens are self-signed, read-only JWTs; nothing in the JSON can point keyrelay at another endpoint."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from keyrelay.errors import UpstreamAuthFailed
from keyrelay.files import gcsauth
from support.storage import gcs_service_account


def _part(text: str) -> dict[str, object]:
    data: dict[str, object] = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    return data


def test_token_is_a_valid_read_only_self_signed_jwt() -> None:
    raw = json.loads(gcs_service_account())
    raw.update(token_uri="http://169.254.169.254/token", gcs_base_url="http://10.0.0.1", disable_oauth=True)
    provide = gcsauth.signer(json.dumps(raw), clock=lambda: 1_800_000_000.0)
    cred = provide()
    header, claims, signature = cred["token"].split(".")
    assert _part(header) == {"alg": "RS256", "typ": "JWT", "kid": "kid-1"}
    assert _part(claims) == {"iss": raw["client_email"], "sub": raw["client_email"], "scope": gcsauth.SCOPE,
                             "iat": 1_800_000_000, "exp": 1_800_003_600}
    assert cred["expires_at"] is not None and cred["expires_at"].timestamp() == 1_800_003_300
    key = serialization.load_pem_private_key(raw["private_key"].encode(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    key.public_key().verify(base64.urlsafe_b64decode(signature + "=="), f"{header}.{claims}".encode(),
                            padding.PKCS1v15(), hashes.SHA256())
    clean = json.loads(gcsauth.sanitized(json.dumps(raw)))
    assert set(clean) == {"type", "client_email", "private_key_id", "private_key"}


@pytest.mark.parametrize("raw", [None, 5, "", "[]", "{}", '{"client_email": "a"}',
                                 '{"client_email": "a", "private_key": "-----BEGIN PRIVATE KEY-----\\nSECRETBITS"}'])
def test_unusable_service_accounts_are_refused_without_echo(raw: object) -> None:
    with pytest.raises(UpstreamAuthFailed) as info:
        gcsauth.signer(raw)
    assert "SECRETBITS" not in info.value.message
