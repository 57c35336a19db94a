"""Go's ``encoding/pem.Decode`` and Gardener's ``utils.DecodeCertificate``: which CA bundles Gardener accepts.

Gardener checks a CA bundle by its first PEM block only: it must be a ``CERTIFICATE`` whose DER parses as an
X.509 certificate. :func:`first_block` follows ``pem.Decode`` step by step (blocks that are not well formed
are skipped, as Go skips them), so that the same bundles pass here as there.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from cryptography import x509

_START = b"\n-----BEGIN "
_END = b"\n-----END "
_END_OF_LINE = b"-----"


@dataclass(frozen=True)
class Block:
    type: str
    headers: dict[str, str]
    data: bytes


def _get_line(data: bytes) -> tuple[bytes, bytes]:
    """Go's ``getLine``: the first line without its end (\\n or \\r\\n) and trailing spaces/tabs, and the rest."""
    i = data.find(b"\n")
    if i < 0:
        line, rest = data, b""
    else:
        j = i + 1
        if i > 0 and data[i - 1:i] == b"\r":
            i -= 1
        line, rest = data[:i], data[j:]
    return line.rstrip(b" \t"), rest


def _remove_spaces_and_tabs(data: bytes) -> bytes:
    return data.replace(b" ", b"").replace(b"\t", b"")


def _std_b64decode(data: bytes) -> bytes | None:
    """``base64.StdEncoding.Decode``: padded standard alphabet; \\r and \\n are ignored."""
    cleaned = data.replace(b"\r", b"").replace(b"\n", b"")
    if len(cleaned) % 4:
        return None
    try:
        return base64.b64decode(cleaned, validate=True)
    except (binascii.Error, ValueError):
        return None


def first_block(data: bytes) -> Block | None:
    """The first well-formed PEM block of ``data``, as ``pem.Decode`` finds it; None when there is none."""
    rest = data
    while True:
        if rest.startswith(_START[1:]):
            rest = rest[len(_START) - 1:]
        else:
            i = rest.find(_START)
            if i < 0:
                return None
            rest = rest[i + len(_START):]
        type_line, rest = _get_line(rest)
        if not type_line.endswith(_END_OF_LINE):
            continue
        type_line = type_line[:-len(_END_OF_LINE)]
        headers: dict[str, str] = {}
        while True:
            if not rest:
                return None  # Go returns (nil, data): no block at all
            line, following = _get_line(rest)
            key, colon, value = line.partition(b":")
            if not colon:
                break
            headers[key.strip().decode("utf-8", "replace")] = value.strip().decode("utf-8", "replace")
            rest = following
        if not headers and rest.startswith(_END[1:]):
            end_index, end_trailer_index = 0, len(_END) - 1
        else:
            end_index = rest.find(_END)
            end_trailer_index = end_index + len(_END)
        if end_index < 0:
            continue
        end_trailer = rest[end_trailer_index:]
        trailer_len = len(type_line) + len(_END_OF_LINE)
        if len(end_trailer) < trailer_len:
            continue
        rest_of_end_line = end_trailer[trailer_len:]
        end_trailer = end_trailer[:trailer_len]
        if not end_trailer.startswith(type_line) or not end_trailer.endswith(_END_OF_LINE):
            continue
        if _get_line(rest_of_end_line)[0]:
            continue
        decoded = _std_b64decode(_remove_spaces_and_tabs(rest[:end_index]))
        if decoded is None:
            continue
        return Block(type_line.decode("utf-8", "replace"), headers, decoded)


def certificate_error(data: bytes) -> str | None:
    """Gardener's ``utils.DecodeCertificate``: why ``data`` is no PEM certificate (its first block), or None."""
    block = first_block(data)
    if block is None or block.type != "CERTIFICATE":
        return "PEM block type must be CERTIFICATE"
    try:
        x509.load_der_x509_certificate(block.data)
    except ValueError as exc:
        return f"x509: {exc}"
    return None
