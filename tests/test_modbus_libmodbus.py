"""libmodbus as an independent peer: its server under the driver, its client against the simulator.

The C peer (edgert/testing/libmodbus_peer.c) is built in test setup against
Debian's libmodbus-dev; without it these tests are skipped, saying so. The
server's typed values are written by libmodbus itself (modbus_set_float_abcd
and its three siblings, MODBUS_SET_INT32/INT64_TO_INT16), and every write the
driver makes is checked in the server's memory, request by request.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from edgert import Point
from edgert.testing import wait_for
from edgert.testing.harness import run_driver
from edgert.testing.libmodbus import (
    Unavailable,
    build,
    libmodbus_client,
    libmodbus_server,
)
from edgert_drivers.modbus import ModbusDriver


@pytest.fixture(scope="module")
def cpeer(tmp_path_factory) -> Path:
    try:
        return build(tmp_path_factory.mktemp("libmodbus"))
    except Unavailable as e:
        pytest.skip(f"libmodbus peer unavailable: {e}")


TYPED = [
    {"name": "f_abcd", "address": 100, "type": "float32"},
    {"name": "f_badc", "address": 102, "type": "float32", "byte_order": "little"},
    {"name": "f_cdab", "address": 104, "type": "float32", "word_order": "little"},
    {
        "name": "f_dcba",
        "address": 106,
        "type": "float32",
        "word_order": "little",
        "byte_order": "little",
    },
    {"name": "i32", "address": 110, "type": "int32"},
    {"name": "i64", "address": 120, "type": "int64"},
    {"name": "u16", "address": 130},
    {"name": "i16", "address": 131, "type": "int16"},
    {"name": "text", "address": 140, "type": "string", "count": 8},
    {"name": "top_in", "table": "input", "address": 65534, "type": "float32"},
    {"name": "in_u16", "table": "input", "address": 65533},
    {"name": "c7", "table": "coil", "address": 7},
    {"name": "c8", "table": "coil", "address": 8},
    {"name": "top_coil", "table": "coil", "address": 65535},
    {"name": "d9", "table": "discrete", "address": 9},
    # writable
    {"name": "relay", "table": "coil", "address": 20, "writable": True},
    {"name": "setpoint", "address": 200, "type": "int16", "scale": 0.1, "writable": True},
    {"name": "o30", "table": "coil", "address": 30, "writable": True},
    {"name": "o31", "table": "coil", "address": 31, "writable": True},
    {"name": "o32", "table": "coil", "address": 32, "writable": True},
    {"name": "limit", "address": 210, "type": "float32", "writable": True},
]
WIDE = [
    {"name": f"v{i}", "address": 2000 + 4 * i, "type": "int64", "writable": True} for i in range(40)
]
COILS = [
    {"name": f"q{i}", "table": "coil", "address": 3000 + i, "writable": True} for i in range(2001)
]

EXPECTED = {
    "i32": -123456789,
    "i64": -1234567890123,
    "u16": 65535,
    "i16": -2,
    "text": "LIBMODBUS-3.1",
    "top_in": -0.5,
    "in_u16": 4242,
    "c7": True,
    "c8": False,
    "top_coil": True,
    "d9": True,
}


def driver_config(transport: str, server) -> dict:
    where = (
        {"transport": "tcp", "host": "127.0.0.1", "tcp_port": server.tcp_port}
        if transport == "tcp"
        else {"port": server.port, "parity": "N", "baudrate": 115200}
    )
    dev = {"name": "c", "unit": 1, "register": TYPED + WIDE + COILS}
    return {**where, "timeout": 1.0, "poll_interval": 0.5, "device": [dev]}


@pytest.mark.parametrize("transport", ["tcp", "rtu"])
def test_the_driver_reads_and_writes_a_libmodbus_server(cpeer, transport) -> None:
    with (
        libmodbus_server(cpeer, transport) as server,
        run_driver(ModbusDriver, driver_config(transport, server)) as run,
    ):
        names = [r["name"] for r in TYPED]
        wait_for(lambda: all(run.latest("c", n) is not None for n in names), 15, "typed values")
        for order in ("abcd", "badc", "cdab", "dcba"):
            assert run.latest("c", f"f_{order}") == pytest.approx(123.456, rel=1e-6), order
        for name, value in EXPECTED.items():
            assert run.latest("c", name) == value, name
        # FC 5, 6, 15, 16, each checked in the server's memory
        start = len(server.drain())
        assert run.command([Point("c", "relay", "0", True)]) is None
        assert server.wait("req 5 20 1", start=start)
        assert server.wait("mem coil 20 ", start=start) == "mem coil 20 1"
        assert run.command([Point("c", "setpoint", "0", -12.5)]) is None
        assert server.wait("mem holding 200", start=start) == f"mem holding 200 {65536 - 125}"
        cmd = [Point("c", "o30", "0", True), Point("c", "o31", "0", False)]
        assert run.command([*cmd, Point("c", "o32", "0", True)]) is None
        assert server.wait("req 15 30 3", start=start)
        assert server.wait("mem coil 30 ", start=start) == "mem coil 30 101"
        assert run.command([Point("c", "limit", "0", 1.5)]) is None
        words = struct.unpack(">2H", struct.pack(">f", 1.5))
        assert (
            server.wait("mem holding 210", start=start) == f"mem holding 210 {words[0]} {words[1]}"
        )
        # merged writes past one request's limit: split, every value written
        start = len(server.drain())
        values = [-(10**12) - i for i in range(40)]
        assert run.command([Point("c", f"v{i}", "0", v) for i, v in enumerate(values)]) is None
        bits = [i % 7 == 0 for i in range(2001)]
        assert run.command([Point("c", f"q{i}", "0", b) for i, b in enumerate(bits)]) is None
        lines = server.drain()[start:]
        fc16 = [int(x.split()[3]) for x in lines if x.startswith("req 16 ")]
        fc15 = [int(x.split()[3]) for x in lines if x.startswith("req 15 ")]
        assert sum(fc16) == 160 and max(fc16) <= 123, fc16
        assert sum(fc15) == 2001 and max(fc15) <= 1968, fc15
        written = {}
        for x in lines:
            if x.startswith("mem holding "):
                _m, _t, addr, *words = x.split()
                for k, w in enumerate(words):
                    written[int(addr) + k] = int(w)
        for i, v in enumerate(values):
            raw = struct.pack(">4H", *(written[2000 + 4 * i + k] for k in range(4)))
            assert struct.unpack(">q", raw)[0] == v
        coil_bits = "".join(
            x.split()[3] for x in lines if x.startswith("mem coil ") and int(x.split()[2]) >= 3000
        )
        assert coil_bits == "".join("1" if b else "0" for b in bits)
        wait_for(lambda: run.latest("c", "v39") == values[39], 5, "read back")
        assert run.latest("c", "errors_exception") == 0


SIM = """
transport = "{transport}"
tcp_port = 0

[[device]]
unit = 1

[[device.register]]
address = 100
type = "float32"
value = 123.456

[[device.register]]
address = 102
type = "float32"
byte_order = "little"
value = 123.456

[[device.register]]
address = 104
type = "float32"
word_order = "little"
value = 123.456

[[device.register]]
address = 106
type = "float32"
word_order = "little"
byte_order = "little"
value = 123.456

[[device.register]]
address = 110
type = "int32"
value = -123456789

[[device.register]]
address = 120
type = "int64"
value = -1234567890123

[[device.register]]
address = 140
type = "string"
count = 4
value = "SIM-01"

[[device.register]]
table = "input"
address = 65534
type = "float32"
value = -0.5

[[device.register]]
table = "coil"
address = 7
value = true

[[device.register]]
table = "discrete"
address = 9
value = true
"""


@pytest.mark.parametrize("transport", ["tcp", "rtu"])
def test_a_libmodbus_client_reads_and_writes_the_simulator(cpeer, modbus_sim, transport) -> None:
    address = modbus_sim(SIM.format(transport=transport))
    where = ["tcp", *address.rsplit(":", 1)] if transport == "tcp" else ["rtu", address]
    out = libmodbus_client(
        cpeer,
        where,
        1,
        "r3:100:8",
        "r4:65534:2",
        "r3:110:2",
        "r3:120:4",
        "r3:140:4",
        "r1:0:10",
        "r2:9:1",
        "w5:20:1",
        "r1:20:1",
        "w6:200:65000",
        "r3:200:1",
        "w15:30:1011",
        "r1:30:4",
        "w16:210:1,2,3",
        "r3:210:3",
    )
    words = list(map(int, out[0].split()[1:]))
    raw = [struct.pack(">2H", *words[i : i + 2]) for i in (0, 2, 4, 6)]
    orders = [raw[0], raw[1][1::-1] + raw[1][:1:-1], raw[2][2:] + raw[2][:2], raw[3][::-1]]
    assert [struct.unpack(">f", b)[0] for b in orders] == [pytest.approx(123.456, rel=1e-6)] * 4
    top = struct.pack(">2H", *map(int, out[1].split()[1:]))
    assert struct.unpack(">f", top)[0] == -0.5
    out = out[1:]
    assert struct.unpack(">i", struct.pack(">2H", *map(int, out[1].split()[1:])))[0] == -123456789
    i64 = struct.unpack(">q", struct.pack(">4H", *map(int, out[2].split()[1:])))[0]
    assert i64 == -1234567890123
    text = struct.pack(">4H", *map(int, out[3].split()[1:]))
    assert text.rstrip(b"\0") == b"SIM-01"
    assert out[4] == "ok 0000000100"
    assert out[5] == "ok 1"
    assert out[6:] == [
        "ok",
        "ok 1",
        "ok",
        "ok 65000",
        "ok",
        "ok 1011",
        "ok",
        "ok 1 2 3",
    ]
