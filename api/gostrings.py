"""Go's string helpers that error messages and checks must match: unicode.IsSpace, strings.TrimSpace, %q."""

from __future__ import annotations


def go_is_space(ch: str) -> bool:
    """Go's ``unicode.IsSpace``."""
    return ch in "\t\n\v\f\r \x85\xa0" or (ord(ch) > 0xFF and ch.isspace())


def go_trim_space(text: str) -> str:
    """Go's ``strings.TrimSpace``."""
    start, end = 0, len(text)
    while start < end and go_is_space(text[start]):
        start += 1
    while end > start and go_is_space(text[end - 1]):
        end -= 1
    return text[start:end]


_SHORT = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v",
          '"': '\\"', "\\": "\\\\"}


def go_quote(text: str) -> str:
    """Go's ``%q`` / ``strconv.Quote``: printable characters stay, the rest is escaped."""
    out = []
    for ch in text:
        code = ord(ch)
        if ch in _SHORT:
            out.append(_SHORT[ch])
        elif 0x20 <= code < 0x7F or (code > 0x9F and ch.isprintable()):
            out.append(ch)
        elif code < 0x100:
            out.append(f"\\x{code:02x}")
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return '"' + "".join(out) + '"'


def go_quote_bytes(data: bytes) -> str:
    """``%q`` of a byte string that may not be valid UTF-8: invalid bytes as ``\\xNN``."""
    out, i = [], 0
    while i < len(data):
        for size in (1, 2, 3, 4):
            try:
                ch = data[i:i + size].decode("utf-8")
            except UnicodeDecodeError:
                continue
            out.append(go_quote(ch)[1:-1])
            i += size
            break
        else:
            out.append(f"\\x{data[i]:02x}")
            i += 1
    return '"' + "".join(out) + '"'
