"""Whitelist parsing and matching: tables of cases, checked against the ipaddress module."""

from __future__ import annotations

import ipaddress

import pytest

from gateway.core.errors import RuleError
from gateway.core.iprules import Whitelist, client_ip, parse_entry

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
    with pytest.raises(RuleError) as caught:
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


# Property tests: the parser and matcher agree with the standard ipaddress module.
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

octets = st.integers(0, 255)
addresses = st.tuples(octets, octets, octets, octets)


def dotted(parts: tuple[int, ...]) -> str:
    return ".".join(map(str, parts))


@given(addresses, addresses)
def test_single_address_matches_only_itself(entry: tuple[int, ...], client: tuple[int, ...]) -> None:
    whitelist = Whitelist.compile([dotted(entry)])
    assert whitelist.allows(int(ipaddress.IPv4Address(dotted(client)))) is (entry == client)
    assert whitelist.allows(int(ipaddress.IPv4Address(dotted(entry))))


@given(addresses, st.integers(0, 32), addresses)
def test_cidr_agrees_with_ipaddress(base: tuple[int, ...], prefix: int, client: tuple[int, ...]) -> None:
    network = ipaddress.IPv4Network(f"{dotted(base)}/{prefix}", strict=False)
    whitelist = Whitelist.compile([str(network)])
    ip = ipaddress.IPv4Address(dotted(client))
    assert whitelist.allows(int(ip)) is (ip in network)


@given(addresses, st.integers(0, 3), addresses)
def test_star_matches_any_octet_in_its_place(base: tuple[int, ...], star: int, client: tuple[int, ...]) -> None:
    parts = [str(p) for p in base]
    parts[star] = "*"
    whitelist = Whitelist.compile([".".join(parts)])
    expected = all(i == star or base[i] == client[i] for i in range(4))
    assert whitelist.allows(int(ipaddress.IPv4Address(dotted(client)))) is expected


@given(addresses, st.integers(0, 32))
def test_host_bits_set_is_rejected_exactly_when_ipaddress_says_so(base: tuple[int, ...], prefix: int) -> None:
    entry = f"{dotted(base)}/{prefix}"
    try:
        ipaddress.IPv4Network(entry, strict=True)
        strict_ok = True
    except ValueError:
        strict_ok = False
    try:
        parse_entry(entry)
        ours_ok = True
    except RuleError:
        ours_ok = False
    assert ours_ok is strict_ok


@given(st.text(max_size=24))
def test_arbitrary_text_is_accepted_only_if_it_is_a_valid_form(text: str) -> None:
    try:
        mask, value = parse_entry(text)
    except RuleError as err:
        assert err.code in ("invalid_field", "ipv6_not_supported")
        return
    if "*" in text:
        assert text.count("*") == 1 and ":" not in text
        replaced = text.replace("*", "0")
        assert ipaddress.IPv4Address(replaced)  # the rest is a valid address
    elif "/" in text:
        assert ipaddress.IPv4Network(text, strict=True)
    else:
        assert int(ipaddress.IPv4Address(text)) == value and mask == 0xFFFFFFFF


@given(st.lists(st.text(alphabet="0123456789.*/:", max_size=18), max_size=8), addresses)
def test_whitelist_allows_iff_some_entry_allows(entries: list[str], client: tuple[int, ...]) -> None:
    valid = []
    for entry in entries:
        try:
            parse_entry(entry)
            valid.append(entry)
        except RuleError:
            pass
    ip = int(ipaddress.IPv4Address(dotted(client)))
    combined = Whitelist.compile(valid).allows(ip)
    assert combined is any(Whitelist.compile([e]).allows(ip) for e in valid)
