"""Where commands may connect: public addresses only, unless a network or host is allow-listed.

Three places apply the policy. The API refuses (422) a job whose argument is a URL to a private,
loopback, link-local or otherwise non-public address (169.254.169.254 among them) before anything
is queued. In the worker's forked child, Python's own sockets refuse every such connection, whatever
URL, redirect or DNS answer led there: a host name is resolved and checked, and the connection goes
to the address that was checked, so a second DNS answer cannot swap it. And the child refuses to start
a program (subprocess, exec, spawn, system) whose command line names such a URL.

What it does not cover: sockets that native code opens by itself, in the child (a C library such as
libcurl inside netCDF or GDAL) or in a program it starts (curl, ffmpeg, a fresh Python) that finds
its address elsewhere than on its command line (a file, a redirect, its own DNS lookup). Nothing at
the socket level stops those; the network the worker runs in must (docs/security.md, "Egress").
"""

from __future__ import annotations

import errno
import ipaddress
import os
import re
import socket
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str], list[str]]

# Schemes whose URL names a host the command connects to. `file` reads the worker's own files.
NETWORK_SCHEMES = frozenset({"http", "https", "ftp", "ftps", "sftp", "ws", "wss", "gopher", "dict"})
REFUSED_SCHEMES = frozenset({"file", "local", "jar", "netdoc"})
# The audit events (PEP 578) of starting a program, and a URL anywhere in a word of its command line.
_SPAWN_EVENTS = frozenset(
    {"subprocess.Popen", "os.exec", "os.posix_spawn", "os.spawn", "os.system", "pty.spawn"}
)
_URL_IN_TEXT = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://[^\s\"'<>]+")
# NAT64 (RFC 6052) embeds an IPv4 address; a gateway would forward it to that address.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def resolve(host: str) -> list[str]:
    """Every address the system resolver gives for a host name."""
    infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    return sorted({str(info[4][0]) for info in infos})


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _embedded_ipv4(ip: IPAddress) -> IPAddress:
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip in _NAT64:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip


class EgressPolicy:
    """Which addresses a command may reach: every public one, plus the allow-listed networks and hosts."""

    def __init__(
        self, allow: Iterable[str] = (), *, resolver: Resolver = resolve, s3_buckets: Iterable[str] = ()
    ) -> None:
        self.allow = tuple(allow)
        self.s3_buckets = tuple(s3_buckets)
        self._s3_buckets = {b.lower() for b in self.s3_buckets}
        self._networks: list[IPNetwork] = []
        self._hosts: set[str] = set()
        for entry in self.allow:
            try:
                self._networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                self._hosts.add(entry.lower().rstrip("."))
        self._resolve = resolver

    def allows_address(self, ip: IPAddress) -> bool:
        if any(ip.version == net.version and ip in net for net in self._networks):
            return True
        inner = _embedded_ipv4(ip)
        if inner is not ip and any(inner.version == n.version and inner in n for n in self._networks):
            return True
        # is_global is False for private, loopback, link-local (the metadata service), shared
        # (100.64/10), reserved, unspecified and documentation ranges.
        return inner.is_global and not inner.is_multicast

    def host_problem(self, host: str) -> str | None:
        """Why a command may not connect to this host, or None when it may."""
        return self._vet(host)[0]

    def _vet(self, host: str) -> tuple[str | None, list[str]]:
        """Why the host is refused (or None), and the resolved addresses that were checked."""
        name = host.lower().rstrip(".")
        if name in self._hosts:
            return None, []
        literal = _literal(name)
        if literal is not None:
            return (None if self.allows_address(literal) else f"'{host}' is not a public address"), []
        try:
            addresses = self._resolve(name)
        except (OSError, UnicodeError):
            addresses = []
        if not addresses:
            return f"host '{host}' cannot be resolved", []
        for address in addresses:
            ip = _literal(address.split("%", 1)[0])
            if ip is None or not self.allows_address(ip):
                return f"host '{host}' resolves to {address}, which is not a public address", addresses
        return None, addresses

    def url_problem(self, text: str) -> str | None:
        """Why a URL argument is refused, or None. Values that are not URLs pass."""
        if "://" not in text:
            return None
        try:
            parts = urlsplit(text.strip())
            host = parts.hostname
        except ValueError:
            return "is not a valid URL"
        scheme = parts.scheme.lower()
        if scheme in REFUSED_SCHEMES:
            return f"'{scheme}://' URLs are not allowed"
        if scheme == "s3":
            bucket = (parts.netloc or "").lower()
            if bucket not in self._s3_buckets:
                return f"bucket '{bucket}' is not on the allow-list for s3:// inputs"
            return None
        if scheme not in NETWORK_SCHEMES:
            return None
        if not host:
            return "URL has no host"
        problem = self.host_problem(host)
        return None if problem is None else f"URL refused: {problem}"

    def check_args(self, args: Mapping[str, Any]) -> list[dict[str, Any]]:
        """A validation error for each argument value that is a URL the command may not fetch."""
        errors: list[dict[str, Any]] = []
        for name, value in args.items():
            values = value if isinstance(value, list) else [value]
            for i, item in enumerate(values):
                if not isinstance(item, str):
                    continue
                problem = self.url_problem(item)
                if problem is not None:
                    loc: list[str | int] = ["body", "args", name] + ([i] if isinstance(value, list) else [])
                    errors.append({"loc": loc, "msg": problem, "type": "egress"})
        return errors

    def guard_sockets(self) -> None:
        """Refuse, in this process, every TCP or UDP connection the policy does not allow.

        Meant for the forked child that runs a command: the parent's sockets are untouched.
        """
        policy = self
        plain_connect = socket.socket.connect
        plain_connect_ex = socket.socket.connect_ex

        def checked(sock: socket.socket, address: Any) -> Any:
            if sock.family not in (socket.AF_INET, socket.AF_INET6) or not isinstance(address, tuple):
                return address
            host = str(address[0])
            literal = _literal(host.split("%", 1)[0])
            if literal is not None:
                if not policy.allows_address(literal):
                    raise _refused(host)
                return address
            problem, addresses = policy._vet(host)
            if problem is not None:
                raise _refused(host, problem)
            if not addresses:  # an allow-listed host name
                return address
            # Connect to an address that was checked, not to whatever a second lookup answers.
            same_family = [a for a in addresses if (":" in a) == (sock.family == socket.AF_INET6)]
            if not same_family:
                raise _refused(host, f"host '{host}' has no address of this socket's family")
            return (same_family[0], *address[1:])

        def connect(sock: socket.socket, address: Any) -> None:
            plain_connect(sock, checked(sock, address))

        def connect_ex(sock: socket.socket, address: Any) -> int:
            try:
                target = checked(sock, address)
            except PermissionError as exc:
                return exc.errno or errno.EACCES
            return plain_connect_ex(sock, target)

        socket.socket.connect = connect  # type: ignore[method-assign,assignment]
        socket.socket.connect_ex = connect_ex  # type: ignore[method-assign,assignment]

    def command_line_problem(self, words: Iterable[str]) -> str | None:
        """Why a program with this command line may not be started (a URL in it the policy refuses)."""
        for word in words:
            for found in _URL_IN_TEXT.finditer(word):
                if found.group(1).lower() not in NETWORK_SCHEMES:
                    continue
                problem = self.url_problem(found.group(0))
                if problem is not None:
                    return f"{found.group(0)!r}: {problem}"
        return None

    def guard_spawns(self) -> None:
        """Refuse, in this process, to start a program whose command line names a refused URL.

        An audit hook (it stays for the life of the process): meant for the forked child only. It
        catches a URL handed on to a native program (`curl <url>`, `ffmpeg -i <url>`), not a program
        that finds its address by itself; see the module's docstring.
        """
        policy = self

        def hook(event: str, args: tuple[Any, ...]) -> None:
            if event not in _SPAWN_EVENTS:
                return
            problem = policy.command_line_problem(_words(args))
            if problem is not None:
                raise PermissionError(errno.EACCES, f"jobgate egress policy: program not started: {problem}")

        sys.addaudithook(hook)

    def guarded(self, target: Callable[[list[str]], int | None]) -> Callable[[list[str]], int | None]:
        """`target` with the socket and program guards installed first: what the worker forks to run
        a command."""

        def run(argv: list[str]) -> int | None:
            self.guard_sockets()
            self.guard_spawns()
            return target(argv)

        return run


def _words(value: Any) -> Iterator[str]:
    """Every string in an audit event's arguments (a program, its argv, a shell line), not its env."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, bytes):
        yield value.decode("utf-8", "replace")
    elif isinstance(value, os.PathLike):
        yield os.fsdecode(value)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _words(item)


def _refused(host: str, why: str | None = None) -> PermissionError:
    reason = why or f"'{host}' is not a public address"
    return PermissionError(errno.EACCES, f"jobgate egress policy: connection refused: {reason}")
