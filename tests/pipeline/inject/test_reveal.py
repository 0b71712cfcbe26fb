"""pipeline/inject/reveal.py: the injectors' one way from a `Secret` to wire text, and back to a `Secret` for
values a connector definition wrote in plain text."""

from __future__ import annotations

import pytest

from keyrelay.model import Secret
from keyrelay.pipeline.inject.reveal import plain, secret


def test_plain_reveals_a_secret_and_passes_plain_settings_as_text() -> None:
    assert plain(Secret("tok-8c1d")) == "tok-8c1d"
    assert (plain("X-Api-Key"), plain(3), plain(2.5)) == ("X-Api-Key", "3", "2.5")


@pytest.mark.parametrize("value", [True, None, {"a": 1}, ["x"], b"bytes"])
def test_anything_else_is_refused_without_showing_it(value: object) -> None:
    with pytest.raises(TypeError) as err:
        plain(value)
    assert str(value) not in str(err.value) or value in (True, None)


def test_secret_wraps_plain_values_and_keeps_secrets_as_they_are() -> None:
    kept = Secret("s-1")
    assert secret(kept) is kept
    wrapped = secret(42)
    assert isinstance(wrapped, Secret) and wrapped.reveal() == "42" and "42" not in repr(wrapped)
