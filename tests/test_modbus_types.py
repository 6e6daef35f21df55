"""More register types: bytes of a register, float16, BCD, string encodings, and FC 22
mask writes of one bit or one byte, against the simulator and libmodbus."""

from __future__ import annotations

import struct

import pytest

from edgert import Point
from edgert.config import ConfigError
from edgert.config import decode as decode_config
from edgert.testing import wait_for
from edgert.testing.harness import run_driver
from edgert.testing.libmodbus import Unavailable, build, libmodbus_server
from edgert_drivers.modbus import ModbusDriver
from edgert_drivers.modbus.config import ModbusConfig, RegisterConfig
from edgert_drivers.modbus.registers import Refused, decode, encode, encode_mask


def reg(**keys) -> RegisterConfig:
    r = RegisterConfig(**{"name": "r", "address": 0, **keys})
    r.check()
    return r


@pytest.mark.parametrize(
    ("keys", "words", "value"),
    [
        ({"type": "int8", "half": "high"}, [0xFF01], -1),
        ({"type": "int8", "half": "low"}, [0xFF01], 1),
        ({"type": "uint8", "half": "high"}, [0x80FE], 128),
        ({"type": "uint8", "half": "low", "scale": 0.5}, [0x80FE], 127.0),
        ({"type": "float16"}, [0x3E00], 1.5),
        ({"type": "float16", "byte_order": "little"}, [0x003E], 1.5),
        ({"type": "bcd16"}, [0x1234], 1234),
        ({"type": "bcd32"}, [0x0012, 0x3456], 123456),
        ({"type": "bcd32", "word_order": "little", "scale": 0.01}, [0x3456, 0x0012], 1234.56),
        ({"type": "string", "count": 2, "encoding": "latin-1"}, [0xE974, 0xE900], "été"),
        ({"type": "string", "count": 3, "encoding": "utf-16"}, [0x03A9, 0x0041, 0], "ΩA"),
        ({"type": "string", "count": 4, "half": "low"}, [0x41, 0x42, 0x43, 0], "ABC"),
        ({"type": "string", "count": 2, "half": "high"}, [0x4100, 0x4200], "AB"),
        (
            {"type": "string", "count": 2, "half": "low", "encoding": "latin-1"},
            [0xE9, 0x74],
            "ét",
        ),
    ],
)
def test_new_types_decode_and_encode(keys, words, value) -> None:
    r = reg(**keys)
    got = decode(r, words)
    assert got == pytest.approx(value) if isinstance(value, float) else got == value
    if r.kind in ("int8", "uint8"):
        and_mask, or_mask = encode_mask(r, value)
        keep = words[0] & and_mask
        assert keep | or_mask == words[0]
    else:
        assert encode(r, value) == words


def test_bcd_with_a_nibble_above_9_reads_as_none_and_ranges_are_checked() -> None:
    assert decode(reg(type="bcd16"), [0x12A4]) is None
    with pytest.raises(Refused):
        encode(reg(type="bcd16"), 10000)
    with pytest.raises(Refused):
        encode(reg(type="int8", half="low"), 128)
    with pytest.raises(Refused):
        encode(reg(type="float16"), 70000.0)
    with pytest.raises(Refused):
        encode(reg(type="string", count=2, encoding="latin-1"), "Ω")


def test_half_is_required_for_bytes_and_encoding_only_for_strings() -> None:
    table = {"port": "/dev/null", "device": [{"name": "d", "unit": 1, "register": []}]}
    for bad, key in (
        ({"type": "int8"}, "half"),
        ({"type": "uint16", "half": "low"}, "half"),
        ({"type": "uint16", "encoding": "latin-1"}, "encoding"),
    ):
        table["device"][0]["register"] = [{"name": "r", "address": 0, **bad}]
        with pytest.raises(ConfigError, match=key):
            decode_config(ModbusConfig, table, "bus")


SIM = """
[[device]]
unit = 1

[[device.register]]
address = 0
value = 0x8001

[[device.register]]
address = 1
type = "int8"
half = "high"
value = -5

[[device.register]]
address = 1
type = "uint8"
half = "low"
value = 200

[[device.register]]
address = 2
type = "bcd32"
value = 20240531

[[device.register]]
address = 4
type = "float16"
value = -2.25

[[device.register]]
address = 5
type = "string"
count = 4
encoding = "utf-16"
value = "Ωmeg"
"""


def test_bits_and_bytes_are_written_with_fc22_keeping_the_rest(modbus_sim) -> None:
    port = modbus_sim(SIM)
    regs = [
        {"name": "word", "address": 0},
        {"name": "bit0", "address": 0, "bit": 0, "writable": True},
        {"name": "bit9", "address": 0, "bit": 9, "writable": True},
        {"name": "hi", "address": 1, "type": "int8", "half": "high", "writable": True},
        {"name": "lo", "address": 1, "type": "uint8", "half": "low", "writable": True},
        {"name": "date", "address": 2, "type": "bcd32"},
        {"name": "f16", "address": 4, "type": "float16"},
        {"name": "text", "address": 5, "type": "string", "count": 4, "encoding": "utf-16"},
    ]
    cfg = {
        "port": port,
        "parity": "N",
        "baudrate": 115200,
        "poll_interval": 0.05,
        "device": [{"name": "d", "unit": 1, "register": regs}],
    }
    with run_driver(ModbusDriver, cfg) as run:
        wait_for(lambda: run.latest("d", "text") is not None, 10, "read")
        assert run.latest("d", "hi") == -5 and run.latest("d", "lo") == 200
        assert run.latest("d", "date") == 20240531
        assert run.latest("d", "f16") == -2.25
        assert run.latest("d", "text") == "Ωmeg"
        assert run.command([Point("d", "bit0", "0", False), Point("d", "bit9", "0", True)]) is None
        wait_for(lambda: run.latest("d", "word") == 0x8200, 5, "bits 0 and 9 written, 15 kept")
        assert run.command([Point("d", "lo", "0", 7)]) is None
        wait_for(lambda: run.latest("d", "lo") == 7, 5, "low byte written")
        assert run.latest("d", "hi") == -5  # the high byte kept


def test_fc22_against_a_libmodbus_server(tmp_path) -> None:
    try:
        binary = build(tmp_path)
    except Unavailable as e:
        pytest.skip(f"libmodbus peer unavailable: {e}")
    regs = [
        {"name": "hi", "address": 132, "type": "int8", "half": "high", "writable": True},
        {"name": "lo", "address": 132, "type": "uint8", "half": "low"},
        {"name": "b3", "address": 132, "bit": 3, "writable": True},
        {"name": "bcd", "address": 133, "type": "bcd16"},
        {"name": "f16", "address": 134, "type": "float16"},
    ]
    with libmodbus_server(binary, "tcp") as server:
        cfg = {
            "transport": "tcp",
            "host": "127.0.0.1",
            "tcp_port": server.tcp_port,
            "poll_interval": 0.1,
            "device": [{"name": "d", "unit": 1, "register": regs}],
        }
        with run_driver(ModbusDriver, cfg) as run:
            wait_for(lambda: run.latest("d", "f16") is not None, 10, "read")
            assert (run.latest("d", "hi"), run.latest("d", "lo")) == (-128, 254)
            assert run.latest("d", "bcd") == 1234 and run.latest("d", "f16") == 1.5
            assert run.command([Point("d", "b3", "0", False)]) is None
            assert server.wait("mem holding 132") == f"mem holding 132 {0x80F6}"
            start = len(server.drain())
            assert run.command([Point("d", "hi", "0", 17)]) is None
            assert server.wait("req 22 132", start=start)
            assert server.wait("mem holding 132", start=start) == f"mem holding 132 {0x11F6}"
            wait_for(lambda: run.latest("d", "hi") == 17, 5, "read back")
            assert struct.pack(">H", 0x11F6)[1] == run.latest("d", "lo")


def test_one_character_a_register_refuses_utf16_and_long_strings() -> None:
    with pytest.raises(Exception, match="half"):
        reg(type="string", count=2, half="low", encoding="utf-16")
    r = reg(type="string", count=2, half="low", writable=True)
    assert encode(r, "Q") == [ord("Q"), 0]
    with pytest.raises(Refused, match="holds 2 bytes"):
        encode(r, "QRS")
