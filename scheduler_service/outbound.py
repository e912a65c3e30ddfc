"""The one way out to a user-given URL: http actions and alert webhooks connect through here.

``HTTP_ACTIONS_DENY_NETWORKS`` is applied to the address a socket is about to connect
to, after DNS: every address a name resolves to is checked just before ``connect()``,
so a name that resolves into a denied network (a rebinding DNS server included) is
refused, and so is every redirect hop, since each hop opens its connection here too.
Checking before connecting rather than after also means a denied network never sees
a SYN from us: "refused by the deny list" cannot tell an open port from a closed one.

The check lives in urllib3's connection (``_new_conn``, the one place a connection
opens its socket), reached through a requests adapter whose pool manager hands the
deny list to every pool and every connection it makes. A session from :func:`session`
is safe to share between tasks: it keeps no cookies, and it reads no proxy or
``~/.netrc`` from the environment (a proxy would connect on our behalf, to an address
this check never sees).

At write time :func:`literal_refusal` refuses a URL whose host is an IP address in a
denied network; a name can only be judged when it is resolved, at run time.
"""
from __future__ import annotations

import ipaddress
import re
import socket
import sys
from collections.abc import Iterable
from http.cookiejar import DefaultCookiePolicy
from typing import Any, Union
from urllib.parse import urlsplit

import requests
from requests.adapters import DEFAULT_POOLSIZE, HTTPAdapter
from urllib3 import HTTPConnectionPool, HTTPSConnectionPool, PoolManager
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import ConnectTimeoutError, LocationParseError, NameResolutionError, NewConnectionError
from urllib3.util.connection import allowed_gai_family
from urllib3.util.timeout import _DEFAULT_TIMEOUT

from .config import SETTINGS

Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

SETTING = "HTTP_ACTIONS_DENY_NETWORKS"
#: The contract's default, for executors built without an app (config.py owns the value).
DEFAULT_DENY_NETWORKS: tuple[Network, ...] = SETTINGS[SETTING][2]

# What inet_aton reads as IPv4 although it is no dotted quad ("2852039166", "0xa9.0xfe.43518"):
# resolvers treat these hosts as addresses, never as names.
_LEGACY_IPV4 = re.compile(r"(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+)){0,3}\Z", re.IGNORECASE)


class Refused(Exception):
    """A connection the guard does not open; the message says which rule (``refused: ...``).

    Not an OSError on purpose: urllib3 would retry it and requests would wrap it as a
    ConnectionError, while a refusal is final and must reach the caller as it is.
    """


def denied_network(address: Address, networks: Iterable[Network]) -> Network | None:
    """The first of ``networks`` that holds ``address`` (an IPv4-mapped IPv6 address counts as its IPv4 one)."""
    candidates = [address]
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        candidates.append(address.ipv4_mapped)  # ::ffff:169.254.169.254 reaches 169.254.169.254
    for network in networks:
        for candidate in candidates:
            if candidate.version == network.version and candidate in network:
                return network
    return None


def deny_reason(host: str, address: Address, network: Network) -> str:
    """'169.254.169.254 is in HTTP_ACTIONS_DENY_NETWORKS (169.254.0.0/16)', naming the host when it is a name."""
    where = f"{address}" if literal_address(host) == address else f"{host} resolves to {address}, which"
    return f"{where} is in {SETTING} ({network})"


def literal_address(host: str) -> Address | None:
    """``host`` as an IP address if it is one (dotted quad, IPv6, or a legacy IPv4 form), else None."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    if _LEGACY_IPV4.match(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def literal_refusal(url: str, networks: Iterable[Network]) -> str | None:
    """Why ``url`` may never be called, if its host is an IP address in a denied network; else None."""
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return None  # not a URL: the field's own validation says so
    address = literal_address(host) if host else None
    network = denied_network(address, networks) if address is not None else None
    return deny_reason(host, address, network) if network is not None else None


def connect(
    host: str,
    port: int,
    networks: Iterable[Network],
    timeout: Any = _DEFAULT_TIMEOUT,
    source_address: tuple[str, int] | None = None,
    socket_options: Iterable[tuple[Any, ...]] | None = None,
) -> socket.socket:
    """A socket connected to ``host:port`` at an address outside ``networks``.

    urllib3's ``create_connection`` with the deny list applied to each resolved address
    before it is connected to. Raises :class:`Refused` if every address that could not be
    reached was denied, else the last connection error.
    """
    host = host.strip("[]")
    try:
        host.encode("idna")
    except UnicodeError:
        raise LocationParseError(f"'{host}', label empty or too long") from None
    refused: Refused | None = None
    error: OSError | None = None
    for family, kind, proto, _, address in socket.getaddrinfo(host, port, allowed_gai_family(), socket.SOCK_STREAM):
        ip = ipaddress.ip_address(address[0])
        network = denied_network(ip, networks)
        if network is not None:
            refused = refused or Refused(f"refused: {deny_reason(host, ip, network)}")
            continue
        sock = socket.socket(family, kind, proto)
        try:
            for option in socket_options or ():
                sock.setsockopt(*option)
            if timeout is not _DEFAULT_TIMEOUT:
                sock.settimeout(timeout)
            if source_address:
                sock.bind(source_address)
            sock.connect(address)
            return sock
        except OSError as exc:
            sock.close()
            error = exc
        except BaseException:
            sock.close()
            raise
    if refused is not None:
        raise refused
    if error is not None:
        raise error
    raise OSError("getaddrinfo returns an empty list")


# --- urllib3: connections, pools and the pool manager that carry the deny list -------


class _GuardedConnection:
    """Opens its socket through :func:`connect`; the rest is urllib3's (TLS, proxies excluded)."""

    networks: tuple[Network, ...]  # set by the pool; no default, so a connection without one fails closed

    def _new_conn(self) -> socket.socket:
        # urllib3's HTTPConnection._new_conn with connect() in place of create_connection.
        try:
            sock = connect(self._dns_host, self.port, self.networks, self.timeout,
                           source_address=self.source_address, socket_options=self.socket_options)
        except socket.gaierror as exc:
            raise NameResolutionError(self.host, self, exc) from exc
        except socket.timeout as exc:
            raise ConnectTimeoutError(
                self, f"Connection to {self.host} timed out. (connect timeout={self.timeout})"
            ) from exc
        except OSError as exc:
            raise NewConnectionError(self, f"Failed to establish a new connection: {exc}") from exc
        sys.audit("http.client.connect", self, self.host, self.port)
        return sock


class _GuardedHTTPConnection(_GuardedConnection, HTTPConnection):
    pass


class _GuardedHTTPSConnection(_GuardedConnection, HTTPSConnection):
    pass


class _GuardedPool:
    networks: tuple[Network, ...]  # set by the pool manager

    def _new_conn(self) -> Any:
        connection = super()._new_conn()  # type: ignore[misc]
        connection.networks = self.networks
        return connection


class _GuardedHTTPPool(_GuardedPool, HTTPConnectionPool):
    ConnectionCls = _GuardedHTTPConnection


class _GuardedHTTPSPool(_GuardedPool, HTTPSConnectionPool):
    ConnectionCls = _GuardedHTTPSConnection


class _GuardedPoolManager(PoolManager):
    def __init__(self, networks: tuple[Network, ...], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.networks = networks
        self.pool_classes_by_scheme = {"http": _GuardedHTTPPool, "https": _GuardedHTTPSPool}

    def _new_pool(self, scheme: str, host: str, port: int, request_context: dict[str, Any] | None = None) -> Any:
        pool = super()._new_pool(scheme, host, port, request_context)
        pool.networks = self.networks
        return pool


class GuardedAdapter(HTTPAdapter):
    """requests' HTTPAdapter whose every connection goes through the deny list."""

    __attrs__ = [*HTTPAdapter.__attrs__, "networks"]

    def __init__(self, networks: Iterable[Network], **kwargs: Any) -> None:
        self.networks = tuple(networks)  # before super().__init__, which builds the pool manager
        super().__init__(**kwargs)

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any) -> None:
        self._pool_connections, self._pool_maxsize, self._pool_block = connections, maxsize, block
        self.poolmanager = _GuardedPoolManager(
            self.networks, num_pools=connections, maxsize=maxsize, block=block, **pool_kwargs,
        )

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        raise Refused("refused: outbound calls go through no proxy (the deny list could not see where it connects)")


def session(networks: Iterable[Network], *, pool_maxsize: int = DEFAULT_POOLSIZE) -> requests.Session:
    """A requests Session, safe to share between threads and tasks, that connects only outside ``networks``."""
    http = requests.Session()
    http.trust_env = False  # no proxy (it would connect for us, unchecked) and no ~/.netrc credentials
    # Shared by every task: a cookie one server sets must never reach another task's request.
    http.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
    adapter = GuardedAdapter(networks, pool_maxsize=max(1, pool_maxsize))
    for prefix in ("https://", "http://"):
        http.adapters[prefix].close()
        http.mount(prefix, adapter)
    return http
