"""`basic` injection (pipeline/inject/basic.py): RFC 7617 `Basic base64(user:password)`; the password and the
pair are secrets to redact."""

from __future__ import annotations

import base64

from keyrelay.pipeline.inject import basic


def test_user_and_password_are_encoded_as_rfc_7617_says() -> None:
    out = basic.inject({"username": "ana", "password": "pä:ss"})
    [(name, value)] = out["headers"]
    assert name == "Authorization" and base64.b64decode(value.removeprefix("Basic ")).decode() == "ana:pä:ss"
    assert out["secrets"] == ["pä:ss"] and out["basic"] == [("ana", "pä:ss")]


def test_the_username_may_be_empty() -> None:
    [(_, value)] = basic.inject({"password": "p"})["headers"]
    assert base64.b64decode(value[6:]) == b":p"
