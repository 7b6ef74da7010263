"""Where commands may connect: public addresses only, unless a network or host is allow-listed.

Two places apply the policy. The API refuses (422) a job whose argument is a URL to a private,
loopback, link-local or otherwise non-public address (169.254.169.254 among them) before anything
is queued. The worker's forked child refuses every such connection at the socket, whatever URL,
redirect or DNS answer led there; a host name is resolved and checked, and the connection goes to
the address that was checked, so a second DNS answer cannot swap it.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str], list[str]]

# Schemes whose URL names a host the command connects to. `file` reads the worker's own files.
NETWORK_SCHEMES = frozenset({"http", "https", "ftp", "ftps", "sftp", "ws", "wss", "gopher", "dict"})
REFUSED_SCHEMES = frozenset({"file", "local", "jar", "netdoc"})
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

    def guarded(self, target: Callable[[list[str]], int | None]) -> Callable[[list[str]], int | None]:
        """`target` with the socket guard installed first: what the worker forks to run a command."""

        def run(argv: list[str]) -> int | None:
            self.guard_sockets()
            return target(argv)

        return run


def _refused(host: str, why: str | None = None) -> PermissionError:
    reason = why or f"'{host}' is not a public address"
    return PermissionError(errno.EACCES, f"jobgate egress policy: connection refused: {reason}")
