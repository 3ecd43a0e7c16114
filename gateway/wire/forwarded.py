"""Who the client is behind trusted proxies: X-Forwarded-For walked right to left. Pure."""

from __future__ import annotations

import ipaddress


class TrustedProxies:
    """The CIDRs whose X-Forwarded-For is believed (IPv4 and IPv6)."""

    def __init__(self, cidrs: tuple[str, ...] | list[str]) -> None:
        self._networks = tuple(ipaddress.ip_network(c.strip(), strict=True) for c in cidrs)

    def __bool__(self) -> bool:
        return bool(self._networks)

    def trusts(self, address: str) -> bool:
        try:
            return self._trusts(ipaddress.ip_address(address))
        except ValueError:
            return False

    def _trusts(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        if ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self._networks)

    def client(self, peer: str, forwarded_for: str) -> str:
        """Walk X-Forwarded-For right to left from a trusted peer.

        The first untrusted hop is the client; if every hop is trusted, the leftmost; a
        malformed entry ends the walk and the last address believed is the client.
        """
        believed = peer
        for hop in reversed(forwarded_for.split(",")):
            hop = hop.strip()
            try:
                ip = ipaddress.ip_address(hop)
            except ValueError:
                return believed
            believed = hop
            if not self._trusts(ip):
                return hop
        return believed
