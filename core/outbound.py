"""Outbound HTTP to URLs staff type in (webhooks): only to public addresses.

A URL someone configures must not make our servers call into our own network (the database,
the cloud metadata service at 169.254.169.254, an admin port on localhost). So the host is
resolved and every address it resolves to must be public; and because a name can point
elsewhere by the time we deliver (DNS rebinding), delivery resolves and checks again and then
connects to exactly the address it checked, never resolving a second time.

Settings:
- WEBHOOK_ALLOW_HTTP: plain http:// URLs are accepted (off in production).
- WEBHOOK_ALLOWED_PRIVATE_NETWORKS: networks (CIDR) that are allowed although not public;
  empty in every environment except where a test delivers to a server on the loopback.
"""

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests
from django.conf import settings
from requests.adapters import HTTPAdapter


class UnsafeURL(ValueError):
    """The URL may not be called. `message` is safe to show; `code` is for logs."""

    def __init__(self, message: str, *, code: str):
        self.message = message
        self.code = code
        super().__init__(message)


@dataclass(frozen=True)
class CheckedURL:
    url: str
    scheme: str
    host: str
    port: int
    path: str  # path and query, as sent in the request line
    addresses: tuple[str, ...]  # every address the host resolved to, each of them allowed


def _allowed_networks() -> list:
    return [
        ipaddress.ip_network(network, strict=False)
        for network in getattr(settings, "WEBHOOK_ALLOWED_PRIVATE_NETWORKS", [])
    ]


def address_refusal(address: str) -> str | None:
    """Why an address may not be called ("loopback", "private", ...), or None when it may."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone ("fe80::1%eth0")
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    if any(ip in network for network in _allowed_networks()):
        return None
    for reason in ("loopback", "private", "link_local", "multicast", "reserved", "unspecified"):
        if getattr(ip, f"is_{reason}"):
            return reason.replace("_", "-")
    if not ip.is_global:  # shared address space (100.64/10), documentation ranges, ...
        return "not public"
    return None


def public_url_check(url: str) -> CheckedURL:
    """Check a URL staff configured; raise UnsafeURL with a clear message when it may not be
    called: not https (unless WEBHOOK_ALLOW_HTTP), credentials in it, a host that does not
    resolve, or any address that is not public."""
    parts = urlsplit(url)
    allowed_schemes = ("https", "http") if settings.WEBHOOK_ALLOW_HTTP else ("https",)
    if parts.scheme not in allowed_schemes:
        raise UnsafeURL("The URL must start with https://.", code="webhook_url_scheme")
    if parts.username or parts.password:
        raise UnsafeURL(
            "The URL must not contain a user name or password.", code="webhook_url_auth"
        )
    host = parts.hostname
    if not host:
        raise UnsafeURL("The URL has no host name.", code="webhook_url_host")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise UnsafeURL("The URL's port is not a number.", code="webhook_url_port") from None
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise UnsafeURL(
            f"The host name “{host}” could not be resolved.", code="webhook_url_unresolved"
        ) from None
    addresses = tuple(dict.fromkeys(info[4][0] for info in infos))
    for address in addresses:
        reason = address_refusal(address)
        if reason:
            raise UnsafeURL(
                f"“{host}” points to a {reason} address ({address}); webhooks are sent only "
                "to public internet addresses.",
                code="webhook_url_not_public",
            )
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return CheckedURL(url, parts.scheme, host, port, path, addresses)


class _PinnedAddressAdapter(HTTPAdapter):
    """Connects to the address in the URL while TLS still checks the certificate (and sends
    SNI) for the original host name."""

    def __init__(self, host: str):
        self._host = host
        super().__init__(max_retries=0)

    def init_poolmanager(self, *args, **kwargs):
        kwargs["server_hostname"] = self._host
        kwargs["assert_hostname"] = self._host
        super().init_poolmanager(*args, **kwargs)


def public_post(url: str, *, data: bytes, headers: dict, timeout: float) -> requests.Response:
    """POST to a URL after checking it again (raises UnsafeURL), connected to the checked
    address itself so a name cannot be re-pointed between the check and the request."""
    checked = public_url_check(url)
    address = checked.addresses[0]
    literal = f"[{address}]" if ":" in address else address
    default_port = 443 if checked.scheme == "https" else 80
    host_header = checked.host if checked.port == default_port else f"{checked.host}:{checked.port}"
    if ":" in checked.host:  # an IPv6 literal host keeps its brackets in the Host header
        host_header = host_header.replace(checked.host, f"[{checked.host}]", 1)
    with requests.Session() as session:
        session.trust_env = False  # no proxy from the environment: it would resolve the name
        session.mount(f"{checked.scheme}://", _PinnedAddressAdapter(checked.host))
        return session.post(
            f"{checked.scheme}://{literal}:{checked.port}{checked.path}",
            data=data,
            headers={**headers, "Host": host_header},
            timeout=timeout,
            allow_redirects=False,  # a redirect would go to an address nobody checked
        )
