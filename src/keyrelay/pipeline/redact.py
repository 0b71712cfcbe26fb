"""Redaction of injected secret values in what the agent reads: bytes, streams, text and parsed JSON.

docs/security.md ("Echoed secrets are redacted") states the guarantee, its limits and its cost. Two stages,
both chunk-boundary safe:

* Literal forms (`_Matcher`): each secret (>= 4 characters) yields byte strings found in one Aho-Corasick pass: raw,
  hex (lower and upper case), UTF-16 (either byte order), base64 (standard and URL-safe, padded and unpadded,
  also with `\\/` and percent-encoded); `add_basic` adds the base64 forms of `user:pass`. Every byte that belongs
  to an occurrence of any form is replaced: overlapping or chained occurrences collapse into one `[REDACTED]`.
* Escaped spellings (`_Spelled`): the secret written with any mix, character by character, of the raw character and
  its escapes in the families a consumer decodes: JSON string escapes, HTML/XML character references and
  percent-encoding (`+` for a space a family of its own), with one level of nesting. Locators find escapes of the
  characters that occur in a secret, each run only when the body holds its introducer bytes (and, from 16 KiB on, a
  literal its matches begin with: one Aho-Corasick pass); escapes of other characters (`\\n`, `\\u00e9`, `&amp;` for
  a secret without `&`) cost nothing more. Near each place that could hold a secret (`_Spelled.windows`), the body
  is decoded in one view per set of families (a consumer that decodes JSON but not HTML reads a different text than
  one that decodes both), each view is searched for the secrets, and a hit is mapped back to the bytes that spell
  it.

A marker never ends an escape left open before it (`_widen`). `bench/redact.py` measures both stages.
"""

from __future__ import annotations

import base64
import functools
import html.entities
import json
import re
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import quote

from ahocorasick_rs import MATCHKIND_LEFTMOST_LONGEST, BytesAhoCorasick

REDACTED = b"[REDACTED]"
MIN_SECRET_LEN = 4
_SP = "surrogatepass"  # a lone surrogate must not make redaction itself fail


def _variants(secret: str) -> set[bytes]:
    """Literal forms of a secret; its percent- and JSON-escaped spellings are `_Spelled`'s."""
    raw = secret.encode("utf-8", _SP)
    out = {raw, raw.hex().encode(), raw.hex().upper().encode()} | _b64(raw)
    out.add(secret.encode("utf-16-le", _SP))  # a body in UTF-16 (json.loads reads it too)
    out.add(secret.encode("utf-16-be", _SP))
    return out


def _b64(data: bytes) -> set[bytes]:
    out: set[bytes] = set()
    for enc in (base64.b64encode(data), base64.urlsafe_b64encode(data)):
        for form in (enc, enc.rstrip(b"=")):
            out.add(form)
            out.add(form.replace(b"/", b"\\/"))  # inside JSON from an encoder that escapes '/' (PHP)
            out.add(quote(form, safe="").encode())  # inside a query string
    return out


# bytes in roughly falling order of frequency in JSON and English text; a byte not listed counts as rarest
_COMMON = b' etaonisrhldcu"mfpgwy,:b0v1k2x.3{}45-6j789q_z/ETAOISNRHLDCUMFPGWYBVKXJQZ\n=+\\%&;'
_RANK = {b: i for i, b in enumerate(_COMMON)}
_LONGEST = MATCHKIND_LEFTMOST_LONGEST
_ONE_PASS_FROM = 16 * 1024  # bytes of data from which one Aho-Corasick pass beats the finds (bench/redact.py)


def _sentinels(v: bytes) -> tuple[bytes, bytes]:
    """The two bytes of `v` least likely to occur in a body: one memchr each rules `v` out cheaply."""
    rare = sorted(set(v), key=lambda b: (-_RANK.get(b, len(_COMMON)), b))
    return bytes(rare[:1]), bytes(rare[1:2] or rare[:1])


class _Matcher:
    """An immutable variant set (longest first); streams keep the one they started with.

    Whether any variant occurs: below `_ONE_PASS_FROM` bytes, `v in data` per variant after a memchr for two
    of its rarest bytes (a `bytes.find` alone falls to a byte-by-byte loop on text whose bytes share its skip
    table's bits with the variant's: 13 us on 1 KiB of `x`); from there on, one Aho-Corasick pass
    (leftmost-longest, SIMD prefilter; CPython has no multi-literal search). That pass releases the GIL, which
    costs a hand-over whenever another thread wants it: worth it on large data only. Where the variants occur
    (`scan`, the rare case) is found with `bytes.find`, which gives the overlapping occurrences too.
    """

    __slots__ = ("_any", "max_len", "probes", "variants")

    def __init__(self, variants: Iterable[bytes]) -> None:
        self.variants = tuple(sorted({v for v in variants if v}, key=lambda v: (-len(v), v)))
        self.max_len = len(self.variants[0]) if self.variants else 0
        # a variant containing another (padded base64 contains unpadded) is present only if that one is
        self.probes = tuple((v, *_sentinels(v)) for v in self.variants
                            if not any(w in v for w in self.variants if w != v))
        self._any = BytesAhoCorasick([v for v, _, _ in self.probes], matchkind=_LONGEST) if self.probes else None

    def present(self, data: bytes) -> bool:
        if len(data) >= _ONE_PASS_FROM:
            return self._any is not None and bool(self._any.find_matches_as_indexes(data))
        for v, a, b in self.probes:  # noqa: SIM110 (a loop: no generator frame per check)
            if a in data and b in data and v in data:
                return True
        return False

    def undecided(self, buf: bytes, start: int) -> int:
        """First position >= start where `buf[j:]` is a proper prefix of a variant (more input may match), or
        the start of an escape left open right before it (`_widen` needs it if a redaction starts there)."""
        n = len(buf)
        best = n
        for v in self.variants:
            lo = max(start, n - len(v) + 1)
            j = buf.find(v[:1], lo, best)
            while j != -1:
                if v.startswith(buf[j:]):
                    best = j
                    break
                j = buf.find(v[:1], j + 1, best)
        return _left_open(buf, max(0, best - _OPEN_WINDOW), best)

    def scan(self, buf: bytes, cover: int, final: bool) -> tuple[list[bytes], int, int]:
        """Redact `buf` as far as it is decided. Returns (output pieces, hold-from index, open cover).

        `cover`: bytes at the start of `buf` already inside an emitted redaction. A position is decided when
        no variant could still start there given more input; only decided positions are redacted or emitted.
        """
        variants = self.variants
        n = len(buf)
        u = n if final else self.undecided(buf, max(0, n - self.max_len + 1))
        out: list[bytes] = []
        pos = 0
        if cover:
            j, end = self._extend(buf, 0, cover, u)
            if j < end:
                return out, j, end - j
            pos = end
        nxt = [buf.find(v, pos) for v in variants]  # next occurrence of each variant at or after pos
        while True:
            s = min((k for k in nxt if k != -1), default=n)
            if s >= u:
                break
            v = variants[nxt.index(s)]  # the longest variant starting at s
            out.append(buf[pos:_widen(buf, s, pos)])
            out.append(REDACTED)
            j, end = self._extend(buf, s + 1, s + len(v), u)
            if j < end:
                return out, j, end - j
            pos = end
            nxt = [buf.find(variants[i], pos) if -1 < k < pos else k for i, k in enumerate(nxt)]
        out.append(buf[pos:u])
        return out, u, 0

    def _extend(self, buf: bytes, j: int, end: int, u: int) -> tuple[int, int]:
        """Grow a redacted span [.., end) by occurrences starting in [j, end); stop at undecided position u.

        Returns (first unexamined start, span end); the span is still open when the first is below the end.
        """
        while True:
            lim = min(end, u)
            if j >= lim:
                return j, end
            new_end = end
            for v in self.variants:
                k = buf.rfind(v, j, lim - 1 + len(v))  # last occurrence starting in [j, lim)
                if k != -1 and k + len(v) > new_end:
                    new_end = k + len(v)
            j = lim
            if new_end == end:
                return j, end
            end = new_end


# --- escaped spellings ------------------------------------------------------------------------------------------

_JSON, _HTML, _PCT, _PLUS = 1, 2, 4, 8  # '+' for a space is a decoding of its own (`unquote` keeps it)
_FAMILY = {"j": _JSON, "h": _HTML, "p": _PCT, "pp": _PLUS}
_SHORT = {'"': b'"', "\\": b"\\\\", "/": b"/", "\b": b"b", "\f": b"f", "\n": b"n", "\r": b"r", "\t": b"t"}
_UNSHORT = {v[-1]: k.encode() for k, v in _SHORT.items()}
# a token the next chunk may still complete or extend: held back by a stream (see `_Spelled.scan`)
_OPEN = re.compile(
    rb"(?:\\{1,8}(?:u[0-9a-fA-F]{0,4}(?:\\{1,8}(?:u[0-9a-fA-F]{0,3})?)?)?"
    rb"|&(?:amp;){0,3}(?:#(?:[xX]?[0-9a-fA-F]{0,16})?|[A-Za-z]{1,32})?|%(?:25){0,3}[0-9a-fA-F]?)\Z")
_OPEN_WINDOW = 80
_NEVER = b"(?!)"


# an escape whose meaning depends on the byte after it: `&#48` then `0` is not `&#48` then `[`
_LEFT_OPEN = re.compile(rb"(?:\\+|&(?:amp;){0,3}(?:#[xX]?[0-9a-fA-F]{0,16}|[A-Za-z][A-Za-z0-9]{0,31})?)\Z")


def _left_open(buf: bytes, lo: int, end: int) -> int:
    """Start of an escape left open right before `end` (searching from `lo`), else `end`."""
    m = _LEFT_OPEN.search(buf, lo, end)
    return end if m is None else m.start()


def _widen(buf: bytes, start: int, floor: int) -> int:
    """Where a redaction at `start` must start so that the marker cannot change what the bytes before it mean
    (`&#48` + secret would decode to `0` + `[REDACTED]`, a backslash would escape the marker's `[`)."""
    return _left_open(buf, max(floor, start - _OPEN_WINDOW), start)


@functools.cache
def _entity_names() -> dict[str, tuple[bytes, ...]]:
    """Character -> the HTML5 names that decode to it alone (without ';'), longest first."""
    names: dict[str, set[str]] = {}
    for name, value in html.entities.html5.items():
        if len(value) == 1:
            names.setdefault(value, set()).add(name.rstrip(";"))
    return {c: tuple(n.encode() for n in sorted(ns, key=lambda n: (-len(n), n))) for c, ns in names.items()}


def _alt(items: Iterable[bytes]) -> bytes:
    unique: list[bytes] = list(set(items))
    unique.sort(key=_longest_first)
    return b"|".join(unique) or _NEVER


def _longest_first(x: bytes) -> tuple[int, bytes]:
    return -len(x), x


def _token_pattern(chars: Sequence[str], nested: bool) -> tuple[bytes, bytes, bytes]:
    """(JSON, HTML, percent) escapes of these characters; each alternative starts with its literal introducer.

    `nested`: an escape escaped again (`\\\\u0026`, `&amp;lt;`, `%253C`) stands for the character too; else those
    read as an escaped introducer followed by raw text, which is what one decoding pass makes of them.
    """
    cps = sorted({ord(c) for c in chars})
    bmp, astral = [c for c in cps if c < 0x10000], [c for c in cps if c >= 0x10000]
    pairs = []
    for c in astral:
        hi, lo = 0xD800 + ((c - 0x10000) >> 10), 0xDC00 + ((c - 0x10000) & 0x3FF)
        pairs.append(b"(?i:%04x)" % hi + (rb"\\{1,8}" if nested else rb"\\") + b"u(?i:%04x)" % lo)
    j = [rb"u(?P<ju>(?i:" + _alt(b"%04x" % c for c in bmp) + b"))", rb"u(?P<jp>" + _alt(pairs) + b")",
         rb"(?P<js>" + _alt(re.escape(_SHORT[c][-1:]) for c in chars if c in _SHORT) + b")"]
    names = [n for c in chars for n in _entity_names().get(c, ())]
    h = [rb"#0{0,8}(?P<hd>" + _alt(b"%d" % c for c in cps) + rb")(?![0-9])",
         rb"#[xX]0{0,8}(?P<hx>(?i:" + _alt(b"%x" % c for c in cps) + rb"))(?![0-9a-fA-F])",
         rb"(?P<hn>" + _alt(names) + b")"]
    octets = sorted({b for c in chars for b in c.encode("utf-8", _SP)})
    runs = (rb"\\{0,7}", b"(?:amp;){0,3}", rb"(?:25){0,3}") if nested else (b"", b"", b"")
    pct = rb"%(?P<p>" + runs[2] + rb"(?P<pb>(?i:" + _alt(b"%02x" % o for o in octets) + b")))"
    if " " in chars:
        pct += _PLUS_BRANCH
    return (rb"\\(?P<j>" + runs[0] + b"(?:" + b"|".join(j) + b"))",
            b"&(?P<h>" + runs[1] + b"(?:" + b"|".join(h) + b");?)", pct)


_PLUS_BRANCH = rb"|\+(?P<pp>)"  # '+' for a space in a query string
_AT, _AFTER_RUN, _IN_RUN = 0, 1, 2  # where a locator's match starts: at the escape, after its backslashes, in them


Locator = tuple[int, re.Pattern[bytes], int]  # (gate, pattern, where)


class _Locators:
    """The locators of one token pattern (`_locators`), and which of them can match in some data: those whose
    gate bytes the data holds (one memchr each, `_introducers`) and, from `_ONE_PASS_FROM` bytes on, one of whose
    literals (every match of the pattern begins with one) occurs. `re` reads about a byte per ns; one
    Aho-Corasick pass for the literals of all of them is ten times faster, and decides for all at once.
    The first `_PROBE` bytes are looked at first, so that a frequent literal (a body full of escapes) is found
    without listing all its occurrences; the whole data is searched only for the locators not seen there.

    The pass reports leftmost-longest matches, which do not overlap, so a literal can occur where none is
    reported: at the start of a reported one (`&amp` at `&amp;`), inside it, or across its end. A reported
    literal therefore stands for the locators of every literal that could hide there too (`_hidden`): they run
    as if found, which is never less than exact."""

    __slots__ = ("_automata", "_literals", "all")

    def __init__(self, found: Sequence[tuple[int, bytes, int, set[bytes]]]) -> None:
        self.all: tuple[Locator, ...] = tuple((gate, re.compile(pattern), where) for gate, pattern, where, _ in found)
        self._literals = tuple(frozenset(starts) for *_, starts in found)
        # for each set of locators: an automaton of their literals, and the locators each literal belongs to
        self._automata: dict[frozenset[int], tuple[BytesAhoCorasick, tuple[frozenset[int], ...]]] = {}

    def runnable(self, buf: bytes, lo: int, intro: int) -> list[Locator]:
        """The locators that can match in `buf[lo:]`, which holds the gate bytes `intro`, in order."""
        gated = [i for i, (gate, _, _) in enumerate(self.all) if gate & intro == gate]
        if not gated or len(buf) - lo < _ONE_PASS_FROM:
            return [self.all[i] for i in gated]
        view = memoryview(buf)[lo:]
        want = frozenset(gated)
        seen = self._present(want, view[:_PROBE])
        if seen != want:
            seen |= self._present(want - seen, view)
        return [self.all[i] for i in gated if i in seen]

    def _present(self, which: frozenset[int], data: memoryview) -> set[int]:
        got = self._automata.get(which)
        if got is None:  # at most one per set of locators (a handful); built on first use
            owners: dict[bytes, set[int]] = {}
            for i in which:
                for literal in self._literals[i]:
                    owners.setdefault(literal, set()).add(i)
            literals = sorted(owners)
            stands_for = tuple(frozenset(owners[y].union(*(owners[z] for z in literals if _hidden(z, y))))
                               for y in literals)
            got = self._automata[which] = (BytesAhoCorasick(literals, matchkind=_LONGEST), stands_for)
        automaton, stands_for = got
        seen: set[int] = set()
        for index, _, _ in automaton.find_matches_as_indexes(data):
            seen |= stands_for[index]
        return seen


def _hidden(z: bytes, y: bytes) -> bool:
    """Whether an occurrence of literal `z` can go unreported under a leftmost-longest match of `y`: `z` begins
    where `y` does (a prefix of it), inside it, or inside it and runs past its end."""
    return z != y and (y.startswith(z) or z in y[1:] or any(z.startswith(y[k:]) for k in range(1, len(y))))


def _locators(chars: Sequence[str], pct: bytes, nested: bool) -> _Locators:
    """The patterns that find where an escape of a secret's character may start, each with its gate (the bytes
    the data must hold), where its match starts relative to the escape, and the literals every match of it
    begins with. Each pattern starts with a literal of one byte or more (`re` scans for one fast, for a set of
    first bytes ~20x slower)."""
    units = sorted({_unit(c) for c in chars})
    out: list[tuple[int, bytes, int, set[bytes]]] = []
    low = [u for u in units if u < 0x100]
    if low:
        out.append((_gate(b"\\"), rb"u00(?i:" + _alt(b"%02x" % u for u in low) + b")", _AFTER_RUN, {b"u00"}))
    high = [u for u in units if u >= 0x100]
    if high:
        out.append((_gate(b"\\"), rb"u(?i:" + _alt(b"%04x" % u for u in high) + b")", _AFTER_RUN,
                    _cased(b"u", [(b"%04x" % u)[:1] for u in high])))
    for c in chars:
        if c in _SHORT:
            short = b"\\" + _SHORT[c][-1:]
            out.append((_gate(b"\\"), re.escape(short), _IN_RUN, {short}))
    # HTML: numeric references; names, of which only the legacy few may lack the ';'; (nested) `&amp;` first
    cps = sorted({ord(c) for c in chars})
    num = (rb"#(?:0{0,8}(?:" + _alt(b"%d" % c for c in cps) + rb")(?![0-9])|[xX]0{0,8}(?i:"
           + _alt(b"%x" % c for c in cps) + rb")(?![0-9a-fA-F]));?")
    names = [n for c in chars for n in _entity_names().get(c, ())]
    out.append((_gate(b"&#"), b"&" + num, _AT, {b"&#"}))
    legacy = [n for n in names if n.decode() in html.entities.html5]  # html5 lists these without ';' too
    if legacy:
        out.append((_gate(b"&"), b"&(?:" + _alt(legacy) + b");?", _AT, {b"&" + n for n in legacy}))
    if names:
        out.append((_gate(b"&;"), b"&(?:" + _alt(names) + b");", _AT, {b"&" + n for n in names}))
    if nested:
        out.append((_gate(b"&;"), rb"&amp;(?:amp;){0,2}(?:" + num + b"|(?:" + _alt(names) + b");?)", _AT,
                    {b"&amp;"}))
    octets = sorted({b for c in chars for b in c.encode("utf-8", _SP)})
    out.append((_gate(b"%"), _bare(pct.removesuffix(_PLUS_BRANCH)), _AT,  # '+' (a space): on its own
                _cased(b"%", [b"2", *((b"%02x" % o)[:1] for o in octets)])))
    if " " in chars:
        out.append((_gate(b"+"), rb"\+", _AT, {b"+"}))
    return _Locators(out)


def _cased(lead: bytes, firsts: Iterable[bytes]) -> set[bytes]:
    """`lead` + each first character, in both cases (the patterns read hex digits case-insensitively)."""
    return {lead + f for first in firsts for f in (first.lower(), first.upper())}


_PROBE = 4096


def _bare(pattern: bytes) -> bytes:
    """The pattern without capturing groups (`findall` then returns the matched bytes)."""
    return re.sub(rb"\(\?P<\w+>", b"(?:", pattern)


_GATE_BYTES = b"\\&%+#;"


def _gate(needs: bytes) -> int:
    """The bit mask of gate bytes a locator needs present (see `_introducers`)."""
    return sum(1 << _GATE_BYTES.index(b) for b in set(needs))


def _introducers(buf: bytes, lo: int = 0) -> int:
    """Which gate bytes `buf[lo:]` holds, as a bit mask: one memchr each (a longer needle whose first byte is
    frequent costs ~30x more to look for)."""
    f = buf.find
    return ((f(b"\\", lo) != -1) | (f(b"&", lo) != -1) << 1 | (f(b"%", lo) != -1) << 2 | (f(b"+", lo) != -1) << 3
            | (f(b"#", lo) != -1) << 4 | (f(b";", lo) != -1) << 5)


def _unit(c: str) -> int:
    """The first UTF-16 code unit of a character (what a `\\u` escape starts with)."""
    cp = ord(c)
    return cp if cp < 0x10000 else 0xD800 + ((cp - 0x10000) >> 10)


def _decoded(m: re.Match[bytes]) -> bytes:
    """The bytes one escape token stands for."""
    g = m.group
    if (v := g("ju")) is not None:
        return chr(int(v, 16)).encode("utf-8", _SP)
    if (v := g("jp")) is not None:
        hi, lo = (int(x, 16) for x in re.findall(rb"[0-9a-fA-F]{4}", v))
        return chr(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)).encode("utf-8", _SP)
    if (v := g("js")) is not None:
        return _UNSHORT[v[0]]
    if (v := g("hd")) is not None:
        return chr(int(v)).encode("utf-8", _SP)
    if (v := g("hx")) is not None:
        return chr(int(v, 16)).encode("utf-8", _SP)
    if (v := g("hn")) is not None:
        name = v.decode()
        return (html.entities.html5.get(name + ";") or html.entities.html5[name]).encode("utf-8", _SP)
    if (v := g("pb")) is not None:
        return bytes([int(v, 16)])
    return b" "  # pp


class _Spelled:
    """Finds the secrets spelled with escapes (module docstring); immutable, shared by every stream."""

    __slots__ = ("_chars", "_find", "_find1", "_lead", "_secrets", "_span", "_texts", "_tok", "_tok1")

    def __init__(self, secrets: Sequence[str]) -> None:
        self._texts = tuple(sorted({s.encode("utf-8", _SP) for s in secrets}, key=lambda t: (-len(t), t)))
        self._secrets = tuple(secrets)
        chars = sorted(set("".join(secrets)))
        self._chars = frozenset(chars)
        j, h, p = _token_pattern(chars, nested=True)
        self._tok = re.compile(j + b"|" + h + b"|" + p)
        self._find = _locators(chars, p, nested=True)
        j, h, p = _token_pattern(chars, nested=False)  # one decoding pass, where runs read differently
        self._tok1 = re.compile(j + b"|" + h + b"|" + p)
        self._find1 = _locators(chars, p, nested=False)
        self._lead = len(self._texts[0])  # raw bytes of a secret before its first escape, at most
        longest = max(_form_len(c) for c in chars)
        self._span = max(len(s) for s in secrets) * longest  # bytes one spelled occurrence can take at most

    def spans(self, buf: bytes, toks: list[re.Match[bytes]]) -> list[tuple[int, int]]:
        """Byte ranges of `buf` that spell a secret in some decoding view (`toks`: the escapes in `buf`)."""
        present = 0
        for m in toks:
            present |= _FAMILY[m.lastgroup or "p"]
        decoded = [(m.start(), m.end(), _FAMILY[m.lastgroup or "p"], _decoded(m)) for m in toks]
        out: list[tuple[int, int]] = []
        for mask in range(1, 16):
            if mask & present != mask:
                continue
            view, v_at, r_at = _view(buf, decoded, mask)
            for t in self._texts:
                i = view.find(t)
                while i != -1:
                    out.append((_to_raw(i, v_at, r_at, end=False), _to_raw(i + len(t), v_at, r_at, end=True)))
                    i = view.find(t, i + 1)
        return out

    def scan(self, buf: bytes, final: bool) -> tuple[bytes, int]:
        """(`buf[:hold]` with every spelled secret redacted, hold): bytes from `hold` on must wait for more."""
        spans = self.found(buf)
        n = len(buf)
        hold = n if final else self._hold(buf)
        if not spans:
            return (buf if hold == n else buf[:hold]), hold
        spans.sort()
        merged: list[list[int]] = []
        for s, e in spans:
            if merged and s <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], e)
            else:
                merged.append([s, e])
        out, pos = [], 0
        for s, e in merged:
            if e > hold:
                hold = min(hold, s)  # a span reaching into the held bytes waits with them
                break
            out += [buf[pos:_widen(buf, s, pos)], REDACTED]
            pos = e
        out.append(buf[pos:hold])
        return b"".join(out), hold

    def _hold(self, buf: bytes) -> int:
        n = len(buf)
        hold = n
        for t in self._texts:  # a secret, or its start, raw at the end: the next chunk may spell the rest
            j = buf.find(t[:1], max(0, n - len(t)))
            while j != -1 and j < hold:
                if t.startswith(buf[j:]):
                    hold = j
                    break
                j = buf.find(t[:1], j + 1)
        lo = max(0, n - self._span)
        for m in self.tokens(buf, max(0, lo - _OPEN_WINDOW)):  # an occurrence open at the end has an escape
            if m.end() > lo:  # within the last span bytes
                hold = min(hold, max(0, m.start() - self._lead))
                break
        tail = _OPEN.search(buf, max(0, n - _OPEN_WINDOW))
        if tail is not None:  # an escape the next chunk may complete, maybe after a raw start of a secret
            hold = min(hold, max(0, tail.start() - self._lead))
        return hold

    def present(self, data: bytes) -> bool:
        return bool(self.found(data))

    def found(self, buf: bytes) -> list[tuple[int, int]]:
        """Byte ranges of `buf` that spell a secret (unsorted, may overlap)."""
        windows = self.windows(buf)
        spans: list[tuple[int, int]] = []
        for lo, hi in windows:
            part = buf if (lo, hi) == (0, len(buf)) else buf[lo:hi]
            toks = self.tokens(part)
            if not toks:
                continue
            got = self.spans(part, toks)
            if b"\\\\" in part or b"&amp;" in part or b"%25" in part:  # a run reads one way nested, another not
                got += self.spans(part, self.tokens(part, single=True))
            spans += [(s + lo, e + lo) for s, e in got]
        return spans

    def windows(self, buf: bytes) -> list[tuple[int, int]]:
        """Where in `buf` a secret may be spelled: none when, for every secret, some part made of characters
        that no escape in `buf` stands for is missing; else around each place that part is found (a secret
        made only of such characters: everywhere). One `findall` per locator whose gate bytes `buf` holds,
        then finds: the escapes are decoded only near a possible secret."""
        found: set[bytes] = set()
        intro = _introducers(buf)
        if not intro:
            return []
        for _, loc, _ in self._find.runnable(buf, 0, intro):
            found.update(loc.findall(buf))
        if not found:
            return []
        chars: set[str] = set()
        for tok in found:
            chars |= self._stands_for(tok)
        n, span = len(buf), self._span
        out: list[tuple[int, int]] = []
        for text in self._secrets:
            parts = [p for p in re.split(self._split(chars), text) if p] if chars else [text]
            if not parts:
                return [(0, n)]
            anchor = max(parts, key=len).encode("utf-8", _SP)
            i = buf.find(anchor)
            while i != -1:
                lo, hi = max(0, i - span), min(n, i + len(anchor) + span)
                if out and lo <= out[-1][1]:
                    out[-1] = (out[-1][0], max(out[-1][1], hi))
                else:
                    out.append((lo, hi))
                i = buf.find(anchor, i + 1)
        out.sort()
        merged: list[tuple[int, int]] = []
        for lo, hi in out:
            if merged and lo <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
            else:
                merged.append((lo, hi))
        return merged

    @staticmethod
    def _split(chars: set[str]) -> str:
        return "[" + "".join(re.escape(c) for c in sorted(chars)) + "]"

    def _stands_for(self, tok: bytes) -> set[str]:
        """The secret characters one located escape may stand for (more than one when unsure)."""
        if tok[:1] == b"u":  # \u escape, found without its backslashes
            unit = int(tok[1:5], 16)
            return {c for c in self._chars if _unit(c) == unit}
        if tok[:1] == b"\\":
            return {k for k, v in _SHORT.items() if v[-1:] == tok[-1:]}
        out: set[str] = set()
        for pattern in (self._tok, self._tok1):
            m = pattern.match(tok)
            if m is not None:
                dec = _decoded(m)
                out |= {c for c in self._chars if dec in c.encode("utf-8", _SP)}
        return out

    def tokens(self, buf: bytes, lo: int = 0, *, single: bool = False) -> list[re.Match[bytes]]:
        """The escapes of a secret's characters in `buf[lo:]`, in order, not overlapping (`single`: as one
        decoding pass reads them, see `_token_pattern`)."""
        found: dict[int, re.Match[bytes]] = {}
        tok = self._tok1 if single else self._tok
        intro = _introducers(buf, lo)
        for _, loc, where in (self._find1 if single else self._find).runnable(buf, lo, intro):
            for hit in loc.finditer(buf, lo):
                start = hit.start()
                if where != _AT:
                    k = start
                    while k > 0 and start - k < 8 and buf[k - 1] == 0x5C:
                        k -= 1
                    if k == start and where == _AFTER_RUN:
                        continue
                    start = k
                while start <= hit.start():  # each escape in a run of backslashes, up to the one located
                    m = found.get(start) or tok.match(buf, start)
                    if m is None:
                        break
                    found[start] = m
                    start = m.end()
        if not found:
            return []
        out: list[re.Match[bytes]] = []
        end = 0
        for start in sorted(found):
            if start >= end:
                out.append(found[start])
                end = found[start].end()
        return out

    def stream(self) -> _SpelledStream:
        return _SpelledStream(self)


def _form_len(c: str) -> int:
    """The longest spelling of one character that the token pattern accepts, in bytes."""
    names = _entity_names().get(c, ())
    json_ = 8 + (5 if ord(c) < 0x10000 else 18)  # backslashes + u + 4 hex (a surrogate pair: twice)
    html_ = 1 + 12 + max([2 + 8 + 6, *(len(n) for n in names)]) + 1  # & + amp; x 3 + #x + zeros + hex, or a name
    return max(json_, html_, 9 * len(c.encode("utf-8", _SP)))  # % + 25 x 3 + 2 hex per octet


def _view(buf: bytes, toks: list[tuple[int, int, int, bytes]], mask: int) -> tuple[bytes, list[int], list[int]]:
    """`buf` with the escapes of the families in `mask` decoded, and its map back to `buf`.

    `v_at[k]`/`r_at[k]`: view and raw offsets of the k-th boundary; even k starts a decoded escape, odd k ends it.
    """
    parts: list[bytes] = []
    v_at: list[int] = []
    r_at: list[int] = []
    pos = vpos = 0
    for start, end, fam, dec in toks:
        if not fam & mask:
            continue
        parts.append(buf[pos:start])
        vpos += start - pos
        v_at += [vpos, vpos + len(dec)]
        r_at += [start, end]
        parts.append(dec)
        vpos += len(dec)
        pos = end
    parts.append(buf[pos:])
    return b"".join(parts), v_at, r_at


def _to_raw(x: int, v_at: list[int], r_at: list[int], *, end: bool) -> int:
    """Raw offset of view offset `x` (a start, or an exclusive end): an escape is redacted whole."""
    k = bisect_right(v_at, x - 1 if end else x) - 1
    if k < 0:
        return x
    if k % 2 == 0:  # inside the decoded escape that starts at v_at[k]
        return r_at[k + 1] if end else r_at[k]
    return x - v_at[k] + r_at[k]


class _SpelledStream:
    __slots__ = ("_buf", "_sp")

    def __init__(self, sp: _Spelled) -> None:
        self._sp = sp
        self._buf = b""

    def feed(self, chunk: bytes) -> bytes:
        buf = self._buf + chunk if self._buf else chunk
        out, hold = self._sp.scan(buf, final=False)
        self._buf = buf[hold:]
        return out

    def flush(self) -> bytes:
        buf, self._buf = self._buf, b""
        return self._sp.scan(buf, final=True)[0] if buf else buf


_CLEAN_HEADS = 64  # response heads remembered as clean or not, per redactor
_CLEAN_HEAD_BYTES = 4096  # larger heads are checked every time


class Redactor:
    """Replaces every form of the given secrets with `[REDACTED]` (module docstring)."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self._secrets = tuple(s for s in secrets if len(s) >= MIN_SECRET_LEN)
        self._variants: set[bytes] = set()
        for s in self._secrets:
            self._variants |= _variants(s)
        self._m = _Matcher(self._variants)
        self._sp = _Spelled(self._secrets) if self._secrets else None
        self._names: _Matcher | None = None
        self._clean_heads: dict[tuple[bytes, bytes], bool] = {}

    def add_basic(self, username: str, password: str) -> None:
        """Also redact the HTTP Basic token base64(`username:password`) (standard and URL-safe)."""
        pair = f"{username}:{password}"
        if len(pair) >= MIN_SECRET_LEN:
            self._variants |= _b64(pair.encode("utf-8", _SP))
            self._m = _Matcher(self._variants)
            self._names = None
            self._clean_heads = {}

    def extended(self, secrets: Iterable[str]) -> Redactor:
        """A new redactor for these secrets as well (e.g. the current OAuth access token); self is unchanged."""
        out = Redactor([*self._secrets, *secrets])
        out._variants |= self._variants
        out._m = _Matcher(out._variants)
        return out

    @property
    def active(self) -> bool:
        return bool(self._m.variants)

    @property
    def max_len(self) -> int:
        return self._m.max_len

    def contains(self, data: bytes) -> bool:
        """Whether `data` holds any form of a secret (literal or spelled with escapes)."""
        return self._m.present(data) or (self._sp is not None and self._sp.present(data))

    def contains_folded(self, data: bytes) -> bool:
        """Whether lower-cased `data` holds a lower-cased literal form of a secret: header names reach the agent
        in lower case, and a name that carried the secret in any case would still tell most of it (names as
        sent, escapes included, are for `contains`)."""
        if self._names is None:
            self._names = _Matcher({v.lower() for v in self._variants})
        return self._names.present(data.lower())

    def clean_head(self, sent: bytes, folded: bytes) -> bool:
        """Whether response header names and values as sent (`sent`) and names as the agent gets them (`folded`)
        hold no form of a secret. Remembered for the last few heads: an upstream sends the same head again and
        again, bar its `Date`, and a source's redactor lives as long as its cached resolution."""
        key = (sent, folded)
        hit = self._clean_heads.get(key)
        if hit is None:
            hit = not self.contains(sent) and not self.contains_folded(folded)
            if len(sent) > _CLEAN_HEAD_BYTES:
                return hit
            if len(self._clean_heads) >= _CLEAN_HEADS:
                self._clean_heads.clear()
            self._clean_heads[key] = hit
        return hit

    def redact_bytes(self, data: bytes) -> bytes:
        m = self._m
        if not m.variants:
            return data
        if self._sp is not None:
            data = self._sp.scan(data, final=True)[0]
        if not m.present(data):
            return data
        return b"".join(m.scan(data, 0, True)[0])

    def redact_text(self, s: str) -> str:
        if not self.active:
            return s
        data = s.encode("utf-8", _SP)
        red = self.redact_bytes(data)
        return s if red is data else red.decode("utf-8", _SP)

    def redact_json(self, doc: Any) -> Any:
        """A parsed JSON document with every key and string value redacted: what a door hands on after parsing.

        One serialisation is checked first (the common case: nothing to do, the same object is returned).
        """
        if not self.active:
            return doc
        try:
            blob = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8", _SP)
            if not self.contains(blob):
                return doc
            return self._walk(doc)
        except RecursionError:  # nested deeper than we can walk: hand on nothing rather than unchecked text
            return REDACTED.decode()

    def _walk(self, doc: Any) -> Any:
        if isinstance(doc, str):
            return self.redact_text(doc)
        if isinstance(doc, dict):
            return {self.redact_text(k) if isinstance(k, str) else k: self._walk(v) for k, v in doc.items()}
        if isinstance(doc, list):
            return [self._walk(v) for v in doc]
        return doc

    def stream(self) -> StreamRedactor:
        return StreamRedactor(self._m, None if self._sp is None else self._sp.stream())


class StreamRedactor:
    """Chunk-boundary-safe redaction: no secret is emitted in pieces. The literal stage's output equals its
    output on the whole input; the escape stage holds back what may still become a secret (`_Spelled.scan`)."""

    __slots__ = ("_buf", "_cover", "_m", "_sp")

    def __init__(self, matcher: _Matcher, spelled: _SpelledStream | None = None) -> None:
        self._m = matcher
        self._sp = spelled
        self._buf = b""
        self._cover = 0

    def feed(self, chunk: bytes) -> bytes:
        """Return the output that is final so far; holds back a bounded tail (a possible start of a secret)."""
        m = self._m
        if not m.variants:
            return chunk
        if self._sp is not None:
            chunk = self._sp.feed(chunk)
        buf = self._buf + chunk if self._buf else chunk
        if not self._cover and not m.present(buf):
            u = m.undecided(buf, max(0, len(buf) - m.max_len + 1))
            self._buf = buf[u:]
            return buf if u == len(buf) else buf[:u]
        out, hold, self._cover = m.scan(buf, self._cover, False)
        self._buf = buf[hold:]
        return b"".join(out)

    def flush(self) -> bytes:
        """Return the held-back tail, redacted. The stream is empty afterwards."""
        tail = b""
        if self._sp is not None:
            tail = self._sp.flush()
        buf, cover = self._buf + tail, self._cover
        self._buf, self._cover = b"", 0
        if not buf or not self._m.variants:
            return buf
        return b"".join(self._m.scan(buf, cover, True)[0])
