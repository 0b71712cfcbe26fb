"""Secrets spelled the many ways a consumer decodes back (JSON escapes, HTML references, percent-encoding), for
property tests of redaction, and the decodings that tell whether a text still holds a secret.

    @given(case=spelled())            # (secret, its spelling inside a JSON string literal)
    ...
    assert all(secret not in view for view in decodings(text))
"""

from __future__ import annotations

import html
import html.entities
from urllib.parse import unquote, unquote_plus

from hypothesis import strategies as st

SECRET_CHARS = "ab&<>\"\\/\u00e9\u20ac\U0001f600 _-=+%#;:xyz0123456789"
_SHORT = {'"': '\\"', "\\": "\\\\", "/": "\\/"}


def _names(c: str) -> list[str]:
    return sorted(k for k, v in html.entities.html5.items() if v == c)


def _spell_char(c: str, how: int, upper: bool, pad: int, semi: bool) -> str:
    """One character inside a JSON string literal, spelled the `how`-th way."""
    def hexcase(x: str) -> str:
        return x.upper() if upper else x
    cp = ord(c)
    end = ";" if semi else ""
    if how == 1 or (how == 0 and c in '"\\'):  # JSON \u escape (a surrogate pair above the BMP)
        units = [cp] if cp < 0x10000 else [0xD800 + ((cp - 0x10000) >> 10), 0xDC00 + ((cp - 0x10000) & 0x3FF)]
        return "".join("\\u" + hexcase(f"{u:04x}") for u in units)
    if how == 2:
        return "&#" + "0" * pad + str(cp) + end
    if how == 3:
        return "&#" + "xX"[upper] + "0" * pad + hexcase(f"{cp:x}") + end
    if how == 4 and _names(c):
        return "&" + _names(c)[pad % len(_names(c))]
    if how == 5:
        return "".join("%" + hexcase(f"{b:02x}") for b in c.encode())
    if how == 6 and c in _SHORT:
        return _SHORT[c]
    return c if c not in '"\\' else _SHORT[c]


@st.composite
def spelled(draw: st.DrawFn) -> tuple[str, str]:
    secret = draw(st.text(alphabet=SECRET_CHARS, min_size=4, max_size=14))
    parts = [_spell_char(c, draw(st.integers(0, 6)), draw(st.booleans()), draw(st.integers(0, 8)),
                         draw(st.booleans())) for c in secret]
    return secret, "".join(parts)


def decodings(s: str) -> list[str]:
    return [s, html.unescape(s), unquote(s), unquote_plus(s), unquote(html.unescape(s)), html.unescape(unquote(s)),
            unquote_plus(html.unescape(s)), html.unescape(unquote_plus(s))]
