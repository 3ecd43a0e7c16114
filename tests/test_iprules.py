"""Whitelist parsing and matching: tables of cases, checked against the ipaddress module."""

from __future__ import annotations

import ipaddress

import pytest

from gateway.iprules import EntryError, Whitelist, client_ip, parse_entry

VALID = [
    ("1.2.3.4", "1.2.3.4", True),
    ("1.2.3.4", "1.2.3.5", False),
    ("192.168.1.*", "192.168.1.0", True),
    ("192.168.1.*", "192.168.1.255", True),
    ("192.168.1.*", "192.168.2.1", False),
    ("10.*.3.4", "10.200.3.4", True),
    ("10.*.3.4", "10.200.3.5", False),
    ("*.2.3.4", "99.2.3.4", True),
    ("10.0.0.0/8", "10.255.0.1", True),
    ("10.0.0.0/8", "11.0.0.1", False),
    ("0.0.0.0/0", "8.8.8.8", True),
    ("172.16.0.0/12", "172.31.255.255", True),
    ("172.16.0.0/12", "172.32.0.0", False),
    ("1.2.3.4/32", "1.2.3.4", True),
    ("0.0.0.0", "0.0.0.0", True),
    ("255.255.255.255", "255.255.255.255", True),
]


@pytest.mark.parametrize(("entry", "ip", "allowed"), VALID)
def test_matching(entry: str, ip: str, allowed: bool) -> None:
    assert Whitelist.compile([entry]).allows(client_ip(ip)) is allowed


@pytest.mark.parametrize(
    ("entry", "code"),
    [
        ("::1", "ipv6_not_supported"),
        ("fe80::1%eth0", "ipv6_not_supported"),
        ("::ffff:1.2.3.4", "ipv6_not_supported"),
        ("1.*.*.4", "invalid_field"),
        ("*.*.*.*", "invalid_field"),
        ("1.2.3.1*", "invalid_field"),
        ("1.2.*3.4", "invalid_field"),
        ("01.2.3.4", "invalid_field"),
        ("1.2.3.00", "invalid_field"),
        ("256.1.1.1", "invalid_field"),
        ("1.2.3.4/33", "invalid_field"),
        ("1.2.3.4/8", "invalid_field"),
        ("1.2.3.0/024", "invalid_field"),
        ("1.2.3.0/x", "invalid_field"),
        ("1.2.3.*/24", "invalid_field"),
        ("", "invalid_field"),
        ("1.2.3", "invalid_field"),
        ("1..2.3", "invalid_field"),
        ("1.2.3.4 ", "invalid_field"),
        ("+1.2.3.4", "invalid_field"),
        ("\u0661.2.3.4", "invalid_field"),  # an Arabic-Indic digit
    ],
)
def test_invalid_entries(entry: str, code: str) -> None:
    with pytest.raises(EntryError) as caught:
        parse_entry(entry)
    assert caught.value.code == code


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1.2.3.4", int(ipaddress.IPv4Address("1.2.3.4"))),
        ("::ffff:1.2.3.4", int(ipaddress.IPv4Address("1.2.3.4"))),
        ("::1", None),
        ("2001:db8::1", None),
        ("garbage", None),
    ],
)
def test_client_ip(text: str, expected: int | None) -> None:
    assert client_ip(text) == expected


def test_ipv6_client_never_matches() -> None:
    whitelist = Whitelist.compile(["0.0.0.0/0", "*.0.0.1"])
    assert not whitelist.allows(client_ip("::1"))
    assert whitelist.allows(client_ip("::ffff:9.9.9.9"))


def test_many_entries_agree_with_ipaddress() -> None:
    entries = ["10.0.0.0/8", "192.168.*.1", "1.2.3.4", "172.16.0.0/12", "8.8.*.8", "100.64.0.0/10"]
    whitelist = Whitelist.compile(entries)
    networks = [ipaddress.ip_network(e) for e in entries if "*" not in e]
    for a in range(0, 256, 17):
        for b in (0, 8, 16, 64, 100, 168, 255):
            for ip_text in (f"{a}.{b}.3.4", f"192.168.{a}.1", f"8.8.{b}.8", f"{b}.{a}.0.1"):
                ip = ipaddress.ip_address(ip_text)
                star = any(
                    all(p == "*" or p == q for p, q in zip(e.split("."), ip_text.split("."), strict=True))
                    for e in entries
                    if "*" in e
                )
                expected = star or any(ip in n for n in networks)
                assert whitelist.allows(int(ip)) is expected, ip_text
