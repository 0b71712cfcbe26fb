"""Catalog connectors declare how their credential fields map onto the generic credential kinds.

Example (Gong): `auth: {basic: {username: "{access_key}", password: "{access_key_secret}"}}`. Placeholders name
credential fields first, then config fields. Values are substituted as whole strings; nothing is parsed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from keyrelay.errors import InvalidRequest
from keyrelay.model import Secret

_PLACEHOLDER = re.compile(r"\{([a-z][a-z0-9_]*)\}")


def render(template: Any, values: Mapping[str, Any]) -> Any:
    """Substitute `{name}` placeholders in every string of `template`. A string filled from a `Secret` stays a
    `Secret` (a lone placeholder passes the value itself through)."""
    if isinstance(template, str):
        whole = _PLACEHOLDER.fullmatch(template)
        if whole is not None and isinstance(values.get(whole.group(1)), Secret):
            return values[whole.group(1)]
        secret = False

        def sub(m: re.Match[str]) -> str:
            nonlocal secret
            value = values.get(m.group(1))
            if isinstance(value, Secret):
                secret = True
                return value.reveal()  # review point: the result is wrapped again below
            if not isinstance(value, str | int) or isinstance(value, bool):
                raise InvalidRequest(f"Source is missing the '{m.group(1)}' field its connector needs")
            return str(value)

        text = _PLACEHOLDER.sub(sub, template)
        return Secret(text) if secret else text
    if isinstance(template, Mapping):
        return {k: render(v, values) for k, v in template.items()}
    if isinstance(template, list):
        return [render(v, values) for v in template]
    return template


def credential_fields(auth: Mapping[str, Any], credentials: Mapping[str, Any],
                      config: Mapping[str, Any]) -> dict[str, Any]:
    """The generic credential kinds for a catalog connector (or the credentials as they are, for `http`). An
    `oauth2` credential, which a Connect authorization leaves on a catalog source, is already generic."""
    if not auth or "oauth2" in credentials:
        return dict(credentials)
    return dict(render(auth, {**config, **credentials}))
