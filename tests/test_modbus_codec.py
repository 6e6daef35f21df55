"""Modbus framing, register codec, block plan and config checks, without any I/O."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgert.config import ConfigError
from edgert.config import decode as decode_config
from edgert_drivers.modbus import pdu
from edgert_drivers.modbus.config import ModbusConfig, RegisterConfig
from edgert_drivers.modbus.crc import crc16, crc_ok, with_crc
from edgert_drivers.modbus.errors import BadFrame, DeviceException
from edgert_drivers.modbus.plan import merge
from edgert_drivers.modbus.registers import Refused, decode, encode
from edgert_drivers.modbus.transport import silence


def test_crc_matches_the_published_vector() -> None:
    # read 10 holding registers from 0 at unit 1: the frame every Modbus guide shows
    assert with_crc(bytes.fromhex("01030000000a")) == bytes.fromhex("01030000000ac5cd")
    assert crc16(b"123456789") == 0x4B37  # CRC-16/MODBUS check value
    assert crc_ok(bytes.fromhex("01030000000ac5cd"))
    assert not crc_ok(bytes.fromhex("01030000000ac5ce"))


@given(st.binary(min_size=1, max_size=256), st.integers(0, 255 * 8 - 1))
def test_any_single_bit_flip_fails_the_crc(data: bytes, bit: int) -> None:
    frame = bytearray(with_crc(data))
    i = bit // 8 % len(frame)
    frame[i] ^= 1 << (bit % 8)
    assert not crc_ok(frame)


def test_expected_answer_lengths() -> None:
    assert pdu.response_length(pdu.read_request(3, 0, 10)) == 22  # + unit + CRC = 25 bytes
    assert pdu.response_length(pdu.read_request(1, 0, 9)) == 4
    assert pdu.response_length(pdu.write_coil(3, True)) == 5
    assert pdu.response_length(pdu.write_registers(3, [1, 2])) == 5
    assert pdu.rtu_request_length(with_crc(b"\x01" + pdu.write_registers(0, [1, 2, 3]))) == 15
    assert pdu.rtu_request_length(b"\x01\x03") == 8


def test_answers_are_checked_against_their_request() -> None:
    req = pdu.read_request(3, 0, 2)
    assert pdu.parse_response(req, bytes.fromhex("030400010002")) == [1, 2]
    with pytest.raises(DeviceException) as e:
        pdu.parse_response(req, bytes.fromhex("8302"))
    assert e.value.code == 2 and "illegal data address" in str(e.value)
    with pytest.raises(BadFrame):
        pdu.parse_response(req, bytes.fromhex("0402" + "0001"))
    with pytest.raises(BadFrame):
        pdu.parse_response(pdu.write_register(1, 5), bytes.fromhex("0600010006"))


def test_inter_frame_silence() -> None:
    assert silence(115200) == 0.00175
    assert silence(19200) == pytest.approx(3.5 * 11 / 19200)
    assert silence(9600) == pytest.approx(0.00401, abs=1e-5)


def reg(**kw) -> RegisterConfig:
    r = RegisterConfig(**{"name": "r", "address": 0, **kw})
    r.check()
    return r


KINDS = ["int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64"]
RANGES = {
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint64": (0, 2**64 - 1),
}


@given(
    st.sampled_from(KINDS),
    st.sampled_from(["big", "little"]),
    st.sampled_from(["big", "little"]),
    st.data(),
)
def test_encode_then_decode_gives_the_value_back(kind, wo, bo, data) -> None:
    r = reg(type=kind, word_order=wo, byte_order=bo)
    if kind in RANGES:
        v = data.draw(st.integers(*RANGES[kind]))
    else:
        v = data.draw(
            st.floats(allow_nan=False, allow_infinity=False, width=32 if kind == "float32" else 64)
        )
    words = encode(r, v)
    assert isinstance(words, list) and len(words) == r.size
    assert decode(r, words) == v


def test_word_swapped_float_is_cdab() -> None:
    r = reg(type="float32", word_order="little")
    big = struct.pack(">f", 1.5)
    assert encode(r, 1.5) == [int.from_bytes(big[2:], "big"), int.from_bytes(big[:2], "big")]


def test_scale_offset_and_refusals() -> None:
    r = reg(type="int16", scale=0.1, offset=-10.0, writable=True, min=-50, max=50)
    assert encode(r, 12.3) == [223]
    assert decode(r, [223]) == pytest.approx(12.3)
    for bad in (50.5, "1", True, math.nan):
        with pytest.raises(Refused):
            encode(r, bad)
    with pytest.raises(Refused):
        encode(reg(type="uint16", writable=True), 70000)
    assert decode(reg(type="float32"), encode(reg(type="float32"), 1.0)) == 1.0
    assert decode(reg(type="float32"), [0x7FC0, 0]) is None  # NaN: no value


def test_merge_respects_gap_and_size() -> None:
    regs = [reg(address=a) for a in (0, 1, 2, 12, 13, 30)]
    for i, r in enumerate(regs):
        r.name = f"r{i}"
    assert [(s, c) for s, c, _ in merge(regs, 125, 8)] == [(0, 3), (12, 2), (30, 1)]
    assert [(s, c) for s, c, _ in merge(regs, 125, 9)] == [(0, 14), (30, 1)]
    assert [(s, c) for s, c, _ in merge(regs, 2, 100)] == [(0, 2), (2, 1), (12, 2), (30, 1)]


def conf(**keys) -> ModbusConfig:
    return decode_config(ModbusConfig, {"port": "/dev/null", **keys}, "[[driver]] 'bus'")


@pytest.mark.parametrize(
    "keys, key",
    [
        ({"parity": "X"}, "parity"),
        ({"port": None, "transport": "tcp"}, "host"),
        ({"device": [{"name": "m", "unit": 300}]}, "unit"),
        (
            {
                "device": [
                    {
                        "name": "m",
                        "unit": 1,
                        "register": [{"name": "v", "address": 0, "type": "float128"}],
                    }
                ]
            },
            "type",
        ),
        (
            {
                "device": [
                    {
                        "name": "m",
                        "unit": 1,
                        "register": [{"name": "v", "address": 0, "type": "string"}],
                    }
                ]
            },
            "count",
        ),
        (
            {
                "device": [
                    {
                        "name": "m",
                        "unit": 1,
                        "register": [
                            {"name": "v", "address": 0, "table": "input", "writable": True}
                        ],
                    }
                ]
            },
            "writable",
        ),
        (
            {"device": [{"name": "m", "unit": 1, "register": [{"name": "online", "address": 0}]}]},
            "name",
        ),
        (
            {
                "device": [
                    {
                        "name": "m",
                        "unit": 1,
                        "register": [{"name": "v", "address": 65535, "type": "int32"}],
                    }
                ]
            },
            "address",
        ),
        (
            {
                "device": [
                    {"name": "m", "unit": 1, "register": [{"name": "v", "address": 0, "bit": 16}]}
                ]
            },
            "bit",
        ),
        (
            {
                "device": [
                    {"name": "m", "unit": 1, "register": [{"name": "v", "address": 0, "colour": 1}]}
                ]
            },
            "colour",
        ),
        ({"device": [{"name": "m", "unit": 1}, {"name": "m", "unit": 2}]}, "device"),
        ({"device": [{"name": "m", "unit": 0}]}, "device"),
    ],
)
def test_config_errors_name_the_key(keys, key) -> None:
    if keys.get("port", "") is None:
        keys = {k: v for k, v in keys.items() if k != "port"}
        with pytest.raises(ConfigError, match=f"'{key}'"):
            decode_config(ModbusConfig, keys, "[[driver]] 'bus'")
        return
    with pytest.raises(ConfigError, match=f"'{key}'"):
        conf(**keys)
