"""The Modbus driver against an independent server (pymodbus), on a pty pair and over TCP.

Register contents are computed here with `struct`, independently of the
driver's codec, and put into the peer's datastore; the driver (run in-process,
its points captured) must publish exactly those values. Requests are counted
by the peer.
"""

from __future__ import annotations

import struct
import time
from typing import Any

import pytest

from edgert import Point
from edgert.testing import wait_for
from edgert.testing.harness import run_driver
from edgert_drivers.modbus import ModbusDriver

FMT = {
    "int16": "h",
    "uint16": "H",
    "int32": "i",
    "uint32": "I",
    "int64": "q",
    "uint64": "Q",
    "float32": "f",
    "float64": "d",
}
SAMPLE = {
    "int16": -12345,
    "uint16": 54321,
    "int32": -123456789,
    "uint32": 3456789012,
    "int64": -1234567890123456789,
    "uint64": 12345678901234567890,
    "float32": 3.25,
    "float64": 2.718281828459045,
}
ORDERS = [("big", "big"), ("big", "little"), ("little", "big"), ("little", "little")]


def words(fmt: str, value: Any, word_order: str, byte_order: str) -> list[int]:
    """Registers holding `value`: big-endian bytes, then swapped as the orders say."""
    data = struct.pack(">" + fmt, value)
    pairs = [data[i : i + 2] for i in range(0, len(data), 2)]
    if word_order == "little":
        pairs.reverse()
    if byte_order == "little":
        pairs = [p[::-1] for p in pairs]
    return [int.from_bytes(p, "big") for p in pairs]


def bus(peer: Any, transport: str, devices: list[dict[str, Any]], **keys: Any) -> dict[str, Any]:
    if transport in ("rtu", "ascii"):
        where = {"port": peer.port, "parity": "N", "baudrate": 115200}
    else:
        where = {"host": "127.0.0.1", "tcp_port": peer.tcp_port}
    return {
        "transport": transport,
        "timeout": 0.5,
        "poll_interval": 0.1,
        **where,
        **keys,
        "device": devices,
    }


def type_map() -> tuple[list[dict[str, Any]], dict[str, Any], list[tuple[str, int, list[Any]]]]:
    """Registers of every type and order, their expected values, and what to store."""
    regs: list[dict[str, Any]] = []
    expect: dict[str, Any] = {}
    store: list[tuple[str, int, list[Any]]] = []
    addr = 0
    for kind, fmt in FMT.items():
        for wo, bo in ORDERS:
            name = f"{kind}_{wo[0]}{bo[0]}"
            regs.append(
                {"name": name, "address": addr, "type": kind, "word_order": wo, "byte_order": bo}
            )
            store.append(("holding", addr, words(fmt, SAMPLE[kind], wo, bo)))
            expect[name] = SAMPLE[kind]
            addr += 4
    # scale and offset
    regs.append({"name": "volts", "address": 200, "type": "int16", "scale": 0.1, "offset": -10.0})
    store.append(("holding", 200, words("h", 2305, "big", "big")))
    expect["volts"] = 2305 * 0.1 - 10.0
    regs.append(
        {
            "name": "energy",
            "table": "input",
            "address": 10,
            "type": "uint32",
            "word_order": "little",
            "scale": 0.001,
        }
    )
    store.append(("input", 10, words("I", 123456789, "little", "big")))
    expect["energy"] = 123456789 * 0.001
    regs.append(
        {
            "name": "power",
            "table": "input",
            "address": 20,
            "type": "float32",
            "word_order": "little",
            "offset": 1.5,
        }
    )
    store.append(("input", 20, words("f", -42.5, "little", "big")))
    expect["power"] = -42.5 + 1.5
    # single bits of a register
    store.append(("holding", 210, [0b1000_0000_0000_0101]))
    for b, v in ((0, True), (1, False), (2, True), (15, True)):
        regs.append({"name": f"bit{b}", "address": 210, "bit": b})
        expect[f"bit{b}"] = v
    regs.append({"name": "bit8_le", "address": 210, "bit": 8, "byte_order": "little"})
    expect["bit8_le"] = True  # the low byte (bits 0..7) read as the high byte: bit 0 -> bit 8
    # strings
    text = b"EDGE-RT1"
    store.append(("holding", 220, [int.from_bytes(text[i : i + 2], "big") for i in range(0, 8, 2)]))
    regs.append({"name": "model", "address": 220, "type": "string", "count": 4})
    expect["model"] = "EDGE-RT1"
    store.append(
        (
            "holding",
            230,
            [
                int.from_bytes(b"ab"[::-1], "big"),
                int.from_bytes(b"c\0", "big"[::1])[::1] if False else int.from_bytes(b"\0c", "big"),
            ],
        )
    )
    regs.append(
        {"name": "swapped", "address": 230, "type": "string", "count": 3, "byte_order": "little"}
    )
    expect["swapped"] = "abc"
    # one character a register, in its low or its high byte
    store.append(("holding", 240, [ord(c) for c in "AB-1"]))
    regs.append({"name": "low", "address": 240, "type": "string", "count": 6, "half": "low"})
    expect["low"] = "AB-1"  # the two registers after it hold 0: the string ends there
    store.append(("holding", 250, [ord(c) << 8 for c in "Zz9"]))
    regs.append({"name": "high", "address": 250, "type": "string", "count": 3, "half": "high"})
    expect["high"] = "Zz9"
    # coils and discrete inputs
    store.append(("coil", 7, [True, False, True]))
    store.append(("discrete", 3, [False, True]))
    regs += [
        {"name": "c7", "table": "coil", "address": 7},
        {"name": "c8", "table": "coil", "address": 8},
        {"name": "c9", "table": "coil", "address": 9},
        {"name": "d4", "table": "discrete", "address": 4},
        {"name": "d3", "table": "discrete", "address": 3},
    ]
    expect.update(c7=True, c8=False, c9=True, d4=True, d3=False)
    return regs, expect, store


@pytest.mark.parametrize(
    "transport", ["rtu", "ascii", "tcp", "rtu_over_tcp", "udp", "rtu_over_udp"]
)
def test_every_type_order_scale_bit_and_string(modbus_peer, transport) -> None:
    peer = modbus_peer(transport)
    regs, expect, store = type_map()
    for table, addr, values in store:
        peer.set(1, table, addr, values)
    cfg = bus(peer, transport, [{"name": "dev", "unit": 1, "register": regs}])
    with run_driver(ModbusDriver, cfg) as run:
        wait_for(
            lambda: all(run.latest("dev", n) is not None for n in expect), 10, "every register"
        )
        assert run.latest("dev", "online") is True
        for name, want in expect.items():
            got = run.latest("dev", name)
            if name.startswith("float32"):
                assert got == pytest.approx(want, rel=1e-6), name
            elif isinstance(want, float):
                assert got == pytest.approx(want, rel=1e-12), name
            else:
                assert got == want and type(got) is type(want), (name, got, want)
        assert run.latest("dev", "errors_timeout") == 0
        assert run.latest("dev", "errors_crc") == 0


def test_blocks_are_merged_within_gap_and_size(modbus_peer) -> None:
    peer = modbus_peer("rtu")
    regs = [
        {"name": "a", "address": 0},
        {"name": "b", "address": 1, "type": "int32"},  # 1..2
        {"name": "c", "address": 5},  # 2 unused (3, 4) <= max_gap: same read 0..5
        {"name": "far", "address": 100},  # too far: its own read
        *({"name": f"r{i}", "address": 300 + i} for i in range(8)),  # 8 > 6 a request: two reads
        {"name": "k0", "table": "coil", "address": 0},
        {"name": "k3", "table": "coil", "address": 3},
        {"name": "k20", "table": "coil", "address": 20},  # 16 unused > max_gap
    ]
    dev = {"name": "dev", "unit": 1, "max_gap": 8, "max_registers_per_request": 6, "register": regs}
    with run_driver(ModbusDriver, bus(peer, "rtu", [dev], poll_interval=0.05)) as run:
        wait_for(lambda: peer.requests(fc=3, address=0) >= 10, 10, "ten polls")
        assert run.latest("dev", "errors_exception") == 0
    log = peer.request_log()
    kinds = {(f, a, c) for _u, f, a, c, _n in log}
    assert kinds == {(3, 0, 6), (3, 100, 1), (3, 300, 6), (3, 306, 2), (1, 0, 4), (1, 20, 1)}
    counts = [n for *_k, n in log]
    assert max(counts) - min(counts) <= 1  # every block once per poll
    peer.reset_requests()
    dev["max_registers_per_request"] = 125
    with run_driver(ModbusDriver, bus(peer, "rtu", [dev], poll_interval=0.05)):
        wait_for(lambda: peer.requests(fc=3, address=0) >= 2, 10, "two polls")
    assert {(a, c) for _u, f, a, c, _n in peer.request_log() if f == 3} == {
        (0, 6),
        (100, 1),
        (300, 8),
    }


def test_each_register_keeps_its_own_interval(modbus_peer) -> None:
    peer = modbus_peer("rtu")
    regs = [
        {"name": "fast", "address": 0, "poll_interval": 0.1},
        {"name": "slow", "address": 1, "poll_interval": 0.5},  # adjacent, but another interval
    ]
    cfg = bus(peer, "rtu", [{"name": "dev", "unit": 1, "register": regs}])
    with run_driver(ModbusDriver, cfg):
        wait_for(lambda: peer.requests(address=1) >= 1, 10, "first poll")
        t0 = time.monotonic()
        fast0, slow0 = peer.requests(address=0), peer.requests(address=1)
        wait_for(lambda: time.monotonic() - t0 >= 3.0, 5, "three seconds")
        fast = peer.requests(address=0) - fast0
        slow = peer.requests(address=1) - slow0
    elapsed = time.monotonic() - t0
    assert abs(fast - elapsed / 0.1) <= 3, (fast, elapsed)  # no drift: 10 a second
    assert abs(slow - elapsed / 0.5) <= 1.5, (slow, elapsed)


WRITABLE = [
    {
        "name": "setpoint",
        "address": 10,
        "type": "float32",
        "word_order": "little",
        "writable": True,
    },
    {
        "name": "limit",
        "address": 12,
        "type": "int16",
        "scale": 0.1,
        "writable": True,
        "min": -100,
        "max": 100,
    },
    {"name": "wide", "address": 14, "type": "uint32", "writable": True},
    {"name": "relay", "table": "coil", "address": 4, "writable": True},
    {"name": "relay2", "table": "coil", "address": 5, "writable": True},
    {"name": "status", "address": 20},
    {"name": "label", "address": 30, "type": "string", "count": 2, "writable": True},
    {"name": "tag", "address": 40, "type": "string", "count": 3, "half": "low", "writable": True},
]


@pytest.mark.parametrize("transport", ["rtu", "ascii", "tcp", "rtu_over_udp"])
def test_commands_land_in_the_device(modbus_peer, transport) -> None:
    peer = modbus_peer(transport)
    cfg = bus(peer, transport, [{"name": "dev", "unit": 1, "register": WRITABLE}])
    with run_driver(ModbusDriver, cfg) as run:
        wait_for(lambda: run.latest("dev", "relay") is not None, 10, "first poll")
        assert run.command([Point("dev", "setpoint", "0", 21.5)]) is None
        assert peer.get(1, "holding", 10, 2) == words("f", 21.5, "little", "big")
        assert run.command([Point("dev", "limit", "0", -12.3)]) is None
        assert peer.get(1, "holding", 12, 1) == words("h", -123, "big", "big")
        assert run.command([Point("dev", "wide", "0", 4000000000)]) is None
        assert peer.get(1, "holding", 14, 2) == words("I", 4000000000, "big", "big")
        assert run.command([Point("dev", "relay", "0", True)]) is None
        assert peer.get(1, "coil", 4, 1) == [True]
        assert (
            run.command([Point("dev", "relay", "0", False), Point("dev", "relay2", "0", True)])
            is None
        )
        assert peer.get(1, "coil", 4, 2) == [False, True]
        assert run.command([Point("dev", "label", "0", "ok")]) is None
        assert peer.get(1, "holding", 30, 2) == [int.from_bytes(b"ok", "big"), 0]
        assert run.command([Point("dev", "tag", "0", "Q7")]) is None
        assert peer.get(1, "holding", 40, 3) == [ord("Q"), ord("7"), 0]
        # read back at once, not at the next interval
        wait_for(lambda: run.latest("dev", "setpoint") == 21.5, 2, "setpoint read back")
        wait_for(lambda: run.latest("dev", "limit") == pytest.approx(-12.3), 2, "limit read back")
    fcs = {f for _u, f, _a, _c, _n in peer.request_log()}
    assert {5, 6, 15, 16} <= fcs  # lone coil, lone register, coils, registers


def test_refused_commands_never_reach_the_device(modbus_peer) -> None:
    peer = modbus_peer("rtu")
    cfg = bus(peer, "rtu", [{"name": "dev", "unit": 1, "register": WRITABLE}])
    with run_driver(ModbusDriver, cfg) as run:
        wait_for(lambda: run.latest("dev", "relay") is not None, 10, "first poll")
        refused = {
            "not writable": [Point("dev", "status", "0", 1)],
            "above max": [Point("dev", "limit", "0", 100.5)],
            "out of int16": [Point("dev", "wide", "0", -1)],
            "unknown register": [Point("dev", "nope", "0", 1)],
            "unknown device": [Point("other", "relay", "0", True)],
            "wrong kind": [Point("dev", "relay", "0", "on")],
            "not a number": [Point("dev", "setpoint", "0", "high")],
            "string too long": [Point("dev", "label", "0", "toolong")],
            "one bad point": [Point("dev", "relay", "0", True), Point("dev", "status", "0", 2)],
        }
        for why, points in refused.items():
            err = run.command(points)
            assert err, why
        assert "not writable" in run.command([Point("dev", "status", "0", 1)])
        assert "above max" in run.command([Point("dev", "limit", "0", 100.5)])
        assert "nope" in run.command([Point("dev", "nope", "0", 1)])
    writes = [x for x in peer.request_log() if x[1] in (5, 6, 15, 16)]
    assert writes == []
    assert peer.get(1, "coil", 4, 1) == [False]
