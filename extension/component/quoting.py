"""Quoting filters for the Jinja templates.

Every value that comes from a user (a URL, a username, a password, a name) is written into YAML, TOML and
shell scripts through one of these filters, so that no value can change the structure of the rendered document: it
always comes back byte for byte when the document is parsed.
"""

from __future__ import annotations

import re
from typing import Any

# YAML double-quoted scalars: escape everything that is not printable ASCII. Non-ASCII characters are
# escaped too, because YAML treats NEL, LS and PS as line breaks inside quoted scalars and parsers differ
# on what else is "printable"; \x, \u and \U escapes are understood by every YAML 1.1/1.2 parser
# (PyYAML, Go's yaml.v2/v3).
_YAML_SHORT = {"\\": "\\\\", '"': '\\"', "\0": "\\0", "\a": "\\a", "\b": "\\b", "\t": "\\t",
               "\n": "\\n", "\v": "\\v", "\f": "\\f", "\r": "\\r", "\x1b": "\\e"}


# Plain (unquoted) scalars only for simple words that no YAML 1.1 or 1.2 parser reads as anything but a
# string: a letter first, then letters, digits, '.', '_', '/', '-'; never a boolean or null word.
_PLAIN = re.compile(r"^[A-Za-z][A-Za-z0-9._/-]*$")
_NOT_PLAIN = frozenset({"y", "n", "yes", "no", "on", "off", "true", "false", "null", "nan", "inf"})


def yaml_quote(value: Any) -> str:
    """A YAML scalar holding ``str(value)`` exactly: plain when that is unambiguous, else double-quoted."""
    text = value if isinstance(value, str) else str(value)
    if _PLAIN.fullmatch(text) and text.lower() not in _NOT_PLAIN and not text.endswith(("-", ".")):
        return text
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch in _YAML_SHORT:
            out.append(_YAML_SHORT[ch])
        elif 0x20 <= code < 0x7F:
            out.append(ch)
        elif code <= 0xFF:
            out.append(f"\\x{code:02x}")
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


# TOML basic strings: control characters must be escaped (TOML has no \x escape); every other
# character may stand as it is.
_TOML_SHORT = {"\\": "\\\\", '"': '\\"', "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def toml_quote(value: Any) -> str:
    """A TOML basic string holding ``str(value)`` exactly."""
    text = value if isinstance(value, str) else str(value)
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch in _TOML_SHORT:
            out.append(_TOML_SHORT[ch])
        elif code < 0x20 or code == 0x7F or 0xD800 <= code <= 0xDFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def toml_array(values: list[Any]) -> str:
    return "[" + ", ".join(toml_quote(v) for v in values) + "]"


def sh_quote(value: Any) -> str:
    """A POSIX shell word holding ``str(value)`` exactly: single-quoted, each ``'`` as ``'\\''``. (No NUL:
    a shell variable cannot hold one; the callers refuse such values.)"""
    text = value if isinstance(value, str) else str(value)
    if "\0" in text:
        raise ValueError("a shell word cannot hold a NUL character")
    return "'" + text.replace("'", "'\\''") + "'"
