"""Host and URL checks with the semantics of the Go extension (``net/url.Parse`` and its validators)."""

from __future__ import annotations

import ipaddress
import re

from api.errors import RegistryCacheError
from api.gostrings import go_quote, go_quote_bytes

DNS1123_LABEL_FMT = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS1123_SUBDOMAIN_FMT = DNS1123_LABEL_FMT + r"(\." + DNS1123_LABEL_FMT + ")*"
# fullmatch everywhere: Go's ^...$ does not match before a trailing newline, Python's $ does
_LABEL_RE = re.compile(DNS1123_LABEL_FMT)
_SUBDOMAIN_RE = re.compile(DNS1123_SUBDOMAIN_FMT)
_DIGITS_RE = re.compile(r"[0-9]+")
_PORT_RE = re.compile(r"([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])")


def _go_len(value: str) -> int:
    """Go's len(): bytes of the UTF-8 encoding."""
    return len(value.encode("utf-8", "surrogatepass"))


def is_dns1123_subdomain(value: str) -> list[str]:
    """``k8s.io/apimachinery/pkg/util/validation.IsDNS1123Subdomain``: the messages, empty when valid."""
    errs = []
    if _go_len(value) > 253:
        errs.append("must be no more than 253 characters")
    if not _SUBDOMAIN_RE.fullmatch(value):
        errs.append("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
                    "'.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used "
                    f"for validation is '{DNS1123_SUBDOMAIN_FMT}')")
    return errs


def is_dns1123_label(value: str) -> list[str]:
    """``IsDNS1123Label``: the messages, empty when valid."""
    errs = []
    if _go_len(value) > 63:
        errs.append("must be no more than 63 characters")
    if not _LABEL_RE.fullmatch(value):
        if _SUBDOMAIN_RE.fullmatch(value):
            errs.append("must not contain dots")
        else:
            errs.append("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and "
                        "must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex "
                        f"used for validation is '{DNS1123_LABEL_FMT}')")
    return errs


def is_ip_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def host_port_errors(host_port: str) -> list[str]:
    """``validateHostPort``: ``host[:port]`` with a DNS-1123 subdomain host and a port in 1..65535."""
    errs: list[str] = []
    host = host_port
    idx = host_port.rfind(":")
    if idx != -1:
        port = host_port[idx + 1:]
        if _DIGITS_RE.fullmatch(port):
            host = host_port[:idx]
            if not _PORT_RE.fullmatch(port):
                errs.append(f"port '{port}' is not valid, valid port must be in the range [1, 65535]")
    return errs + is_dns1123_subdomain(host)


class URLParseError(RegistryCacheError, ValueError):
    pass


class ParsedURL:
    __slots__ = ("scheme", "userinfo", "host", "path", "query", "fragment")

    def __init__(self, scheme: str, userinfo: str | None, host: str, path: str, query: str, fragment: str):
        self.scheme, self.userinfo, self.host = scheme, userinfo, host
        self.path, self.query, self.fragment = path, query, fragment  # path as written (escapes kept)

    def path_segments(self) -> list[bytes]:
        """Go's ``strings.Split(url.Path, "/")``: the segments of the unescaped path."""
        return _percent_decode(self.path).split(b"/")


def _percent_decode(text: str) -> bytes:
    """net/url's unescape of a path (already checked by :func:`_unescape`): %XX becomes the byte, '+' stays."""
    data = text.encode("utf-8", "surrogatepass")
    out, i = bytearray(), 0
    while i < len(data):
        if data[i] == 0x25 and i + 2 < len(data):
            out.append(int(data[i + 1:i + 3], 16))
            i += 3
        else:
            out.append(data[i])
            i += 1
    return bytes(out)


_HEX = "0123456789abcdefABCDEF"
_HOST_OK = set("!$&'()*+,;=:[]<>\"-_.~")  # besides letters and digits (net/url shouldEscape, encodeHost)
_USERINFO_OK = set("-._:~!$&'()*+,;=%@")


def _unescape(text: str, host: bool = False) -> str:
    """net/url's ``unescape`` checks: valid %-escapes; in a host no escaped ASCII (but %25) and no ASCII
    character that would need escaping."""
    data = text.encode("utf-8", "surrogatepass")  # Go works on bytes
    hexdigits = _HEX.encode()
    i = 0
    while i < len(data):
        byte = data[i]
        if byte == 0x25:  # %
            if i + 2 >= len(data) or data[i + 1] not in hexdigits or data[i + 2] not in hexdigits:
                raise URLParseError(f"invalid URL escape {go_quote_bytes(data[i:i + 3])}")
            if host and int(chr(data[i + 1]), 16) < 8 and data[i:i + 3] != b"%25":
                raise URLParseError(f"invalid URL escape {go_quote_bytes(data[i:i + 3])}")
            i += 3
            continue
        ch = chr(byte)
        if host and byte < 0x80 and not ch.isalnum() and ch not in _HOST_OK:
            raise URLParseError(f"invalid character {go_quote(ch)} in host name")
        i += 1
    return text


def _parse_host(host: str, scheme: str) -> str:
    if "[" in host[1:]:  # a '[' anywhere but first
        raise URLParseError("invalid IP-literal")
    if host.startswith("["):
        end = host.rfind("]")
        if end < 0:
            raise URLParseError("missing ']' in host")
        port = host[end + 1:]
        if port and not (port[0] == ":" and all(c in "0123456789" for c in port[1:])):
            raise URLParseError(f"invalid port {go_quote(port)} after host")
        literal = host[1:end].split("%25", 1)[0]
        try:
            address = ipaddress.ip_address(literal)
        except ValueError:  # Go: "invalid host: ParseAddr(...): <netip's reason>"
            raise URLParseError(f"invalid host: ParseAddr({go_quote(literal)}): not an IP address") from None
        if address.version != 6:
            raise URLParseError("invalid IP-literal")
        return _unescape(host, host=True)
    # Go 1.26 takes the first colon of an http(s) host, the last one otherwise
    colon = host.find(":") if scheme in ("http", "https") else host.rfind(":")
    if colon != -1 and not all(c in "0123456789" for c in host[colon + 1:]):
        raise URLParseError(f"invalid port {go_quote(host[colon:])} after host")
    return _unescape(host, host=True)


def parse_url(raw: str) -> ParsedURL:
    """The parts of ``net/url.Parse`` that the validation looks at, with Go's checks and errors."""
    rest, has_fragment, fragment = raw.partition("#")
    try:
        url = _parse(rest)
    except URLParseError as exc:
        raise URLParseError(f"parse {go_quote(rest)}: {exc}") from None
    if has_fragment:
        try:
            url.fragment = _unescape(fragment)
        except URLParseError as exc:
            raise URLParseError(f"parse {go_quote(raw)}: {exc}") from None
    return url


def _parse(raw: str) -> ParsedURL:
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in raw):
        raise URLParseError("net/url: invalid control character in URL")
    scheme, rest = "", raw
    for i, ch in enumerate(raw):
        if ch.isascii() and ch.isalpha():
            continue
        if ch.isascii() and (ch.isdigit() or ch in "+-."):
            if i == 0:
                break
            continue
        if ch == ":":
            if i == 0:
                raise URLParseError("missing protocol scheme")
            scheme, rest = raw[:i].lower(), raw[i + 1:]
        break
    if rest.endswith("?") and rest.count("?") == 1:
        rest, query = rest[:-1], ""
    else:
        rest, _, query = rest.partition("?")
    if not rest.startswith("/"):
        if scheme:
            return ParsedURL(scheme, None, "", "", query, "")  # opaque: no host, no path
        if ":" in rest.split("/", 1)[0]:
            raise URLParseError("first path segment in URL cannot contain colon")
    userinfo, host, path = None, "", rest
    if rest.startswith("//") and (scheme or not rest.startswith("///")):
        authority, slash, tail = rest[2:].partition("/")
        path = slash + tail
        at = authority.rfind("@")
        host = _parse_host(authority[at + 1:], scheme)
        if at >= 0:
            userinfo = authority[:at]
            if not all(c.isascii() and (c.isalnum() or c in _USERINFO_OK) for c in userinfo):
                raise URLParseError("net/url: invalid userinfo")
            _unescape(userinfo)
    _unescape(path)
    return ParsedURL(scheme, userinfo, host, path, query, "")


def url_errors(raw: str, allow_path: bool = False) -> list[str]:
    """``ValidateURL``: an http(s) URL of ``host[:port]``, no user info, query or fragment; a path only with
    ``allow_path`` (a mirror host), and then without ``.`` or ``..`` segments."""
    try:
        url = parse_url(raw)
    except URLParseError as exc:
        return [f"failed to parse url: {exc}"]
    if url.scheme not in ("http", "https"):
        return ["url must start with 'http://' or 'https://' scheme"]
    errs = host_port_errors(url.host)
    if not allow_path and url.path not in ("", "/"):
        errs.append("url must not contain a path")
    if allow_path:
        segments = url.path_segments()
        if b".." in segments:
            errs.append("url path must not contain '..'")
        if b"." in segments:
            errs.append("url path must not contain '.'")
    if url.userinfo is not None:
        errs.append("url must not contain user info")
    if url.query:
        errs.append("url must not contain query parameters")
    if url.fragment:
        errs.append("url must not contain a fragment")
    return errs
