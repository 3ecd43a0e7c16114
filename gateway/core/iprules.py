"""IP whitelist entries: parsing, validation and matching.

Entries are single IPv4 addresses, ranges with exactly one `*` octet, or CIDR blocks.
A whitelist is compiled once into integer masks so a match is a few dict lookups.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from gateway.core.errors import RuleError

FULL_MASK = 0xFFFFFFFF


def _octet(text: str, entry: str) -> int:
    if not text or not text.isascii() or not text.isdigit():
        raise RuleError(None, f"'{entry}' is not an IPv4 address or range")
    if len(text) > 1 and text[0] == "0":
        raise RuleError(None, f"'{entry}' has an octet with a leading zero")
    value = int(text)
    if value > 255:
        raise RuleError(None, f"'{entry}' has an octet above 255")
    return value


def parse_entry(entry: str) -> tuple[int, int]:
    """Return (mask, network) for one entry; raise RuleError if it is not valid."""
    if ":" in entry:
        raise RuleError(None, f"'{entry}' is IPv6; only IPv4 is supported", "ipv6_not_supported")
    if not entry:
        raise RuleError(None, "an empty entry is not an IP address")
    address, slash, prefix_text = entry.partition("/")
    parts = address.split(".")
    if len(parts) != 4:
        raise RuleError(None, f"'{entry}' is not an IPv4 address or range")
    if slash:
        if "*" in address:
            raise RuleError(None, f"'{entry}' mixes '*' and a CIDR prefix")
        prefix = _octet(prefix_text, entry) if prefix_text else -1
        if not 0 <= prefix <= 32:
            raise RuleError(None, f"'{entry}' has a CIDR prefix outside 0-32")
        value = 0
        for part in parts:
            value = (value << 8) | _octet(part, entry)
        mask = (FULL_MASK << (32 - prefix)) & FULL_MASK
        if value & ~mask & FULL_MASK:
            raise RuleError(None, f"'{entry}' has host bits set after the prefix")
        return mask, value
    stars = parts.count("*")
    if stars > 1:
        raise RuleError(None, f"'{entry}' has more than one '*'")
    mask = value = 0
    for part in parts:
        mask <<= 8
        value <<= 8
        if part == "*":
            continue
        if "*" in part:
            raise RuleError(None, f"'{entry}' has a '*' inside an octet")
        mask |= 0xFF
        value |= _octet(part, entry)
    return mask, value


def client_ip(text: str) -> int | None:
    """The IPv4 address of a client as an int, or None for IPv6 (which never matches)."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if address.version == 6:
        mapped = address.ipv4_mapped
        return int(mapped) if mapped is not None else None
    return int(address)


@dataclass(frozen=True, slots=True)
class Whitelist:
    """A compiled whitelist: exact addresses in a set, ranges grouped by mask."""

    exact: frozenset[int]
    ranges: tuple[tuple[int, frozenset[int]], ...]

    @classmethod
    def compile(cls, entries: tuple[str, ...] | list[str]) -> Whitelist:
        exact: set[int] = set()
        by_mask: dict[int, set[int]] = {}
        for entry in entries:
            mask, value = parse_entry(entry)
            if mask == FULL_MASK:
                exact.add(value)
            else:
                by_mask.setdefault(mask, set()).add(value)
        ranges = tuple((mask, frozenset(values)) for mask, values in by_mask.items())
        return cls(frozenset(exact), ranges)

    def allows(self, ip: int | None) -> bool:
        if ip is None:
            return False
        if ip in self.exact:
            return True
        for mask, values in self.ranges:
            if ip & mask in values:
                return True
        return False
