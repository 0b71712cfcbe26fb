"""The one place the injectors turn a `Secret` into the text they put on the wire (docs/security.md: secrets
are a type). Every call of `plain` is a review point: its result may only go into an outbound request."""

from __future__ import annotations

from typing import Any

from keyrelay.model import Secret


def plain(value: Any) -> str:
    """The text of a credential value: a `Secret` revealed, or a setting that is already plain text (a header
    name from a connector definition, a number)."""
    if isinstance(value, Secret):
        return value.reveal()
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return str(value)
    raise TypeError("a credential value must be text")


def secret(value: Any) -> Secret:
    """A credential value as a `Secret` (settings written in a connector definition arrive as plain text)."""
    return value if isinstance(value, Secret) else Secret(plain(value))
