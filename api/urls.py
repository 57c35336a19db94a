"""Host and URL checks with the semantics of the Go extension (``net/url.Parse`` and its validators)."""

from __future__ import annotations

import re

from .gostrings import go_quote

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


class URLParseError(ValueError):
    pass


class ParsedURL:
    __slots__ = ("scheme", "userinfo", "host", "path", "query", "fragment")

    def __init__(self, scheme: str, userinfo: str | None, host: str, path: str, query: str, fragment: str):
        self.scheme, self.userinfo, self.host = scheme, userinfo, host
        self.path, self.query, self.fragment = path, query, fragment


def parse_url(raw: str) -> ParsedURL:
    """The parts of ``net/url.Parse`` that the validation looks at, with Go's errors."""
    prefix = f"parse {go_quote(raw)}: "
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in raw):
        raise URLParseError(prefix + "net/url: invalid control character in URL")
    rest, _, fragment = raw.partition("#")
    scheme = ""
    for i, ch in enumerate(rest):
        if ch.isascii() and ch.isalpha():
            continue
        if ch.isascii() and (ch.isdigit() or ch in "+-."):
            if i == 0:
                break
            continue
        if ch == ":":
            if i == 0:
                raise URLParseError(prefix + "missing protocol scheme")
            scheme, rest = rest[:i].lower(), rest[i + 1:]
        break
    rest, _, query = rest.partition("?")
    userinfo, host, path = None, "", rest
    if rest.startswith("//") and (scheme or not rest.startswith("///")):
        authority, slash, tail = rest[2:].partition("/")
        path = slash + tail
        if "@" in authority:
            userinfo, _, host = authority.rpartition("@")
        else:
            host = authority
        if not host.startswith("["):
            colon = host.rfind(":")
            if colon != -1:
                port = host[colon + 1:]
                if port and not (port.isascii() and port.isdigit()):
                    raise URLParseError(prefix + f"invalid port {go_quote(host[colon:])} after host")
        for ch in host:
            if ch == " " or ch in "<>\"{}|\\^`" or (not ch.isascii() and not ch.isprintable()):
                raise URLParseError(prefix + f"invalid character {go_quote(ch)} in host name")
    return ParsedURL(scheme, userinfo, host, path, query, fragment)


def url_errors(raw: str, allow_path: bool = False) -> list[str]:
    """``ValidateURL``: an http(s) URL of ``host[:port]``, no user info, query or fragment (nor path)."""
    try:
        url = parse_url(raw)
    except URLParseError as exc:
        return [f"failed to parse url: {exc}"]
    if url.scheme not in ("http", "https"):
        return ["url must start with 'http://' or 'https://' scheme"]
    errs = host_port_errors(url.host)
    if not allow_path and url.path not in ("", "/"):
        errs.append("url must not contain a path")
    if url.userinfo is not None:
        errs.append("url must not contain user info")
    if url.query:
        errs.append("url must not contain query parameters")
    if url.fragment:
        errs.append("url must not contain a fragment")
    return errs
