"""Finding the units on a bus: which answer, who they are, and a config block for them.

`scan(cfg, units, timeout)` opens the bus `cfg` describes and asks each unit
one cheap question (read holding register 0, FC 3), waiting at most `timeout`
seconds for it: any answer, an exception included, means the unit is there.
Each unit found is asked for its device identification (FC 43/14, basic and
regular objects: vendor, product code, revision, product name), which many
devices give and some refuse. `suggest(cfg, found)` writes the
`[[driver]]`/`[[driver.device]]` TOML for what was found.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

from .config import ModbusConfig
from .errors import BadFrame, DeviceException, ModbusError, PortError, Timeout
from .pdu import read_request
from .transport import Transport, open_transport

__all__ = ["Found", "scan", "identify", "suggest", "parse_units"]

#: FC 43/14 object ids and their names
OBJECTS = {0: "vendor", 1: "product_code", 2: "revision", 3: "vendor_url", 4: "product_name"}


@dataclass
class Found:
    """A unit that answered, with what it said."""

    unit: int
    answer: str  # "holding 0 = 1234", or the exception it answered with
    ident: dict[str, str] = field(default_factory=dict)
    ident_error: str = ""


def parse_units(text: str) -> list[int]:
    """ "1-5,9,20-22" as unit ids (each 0..255)."""
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        a, b = int(lo), int(hi or lo)
        if not 0 <= a <= b <= 255:
            raise ValueError(f"unit range {part!r} is not within 0..255")
        out += range(a, b + 1)
    return out


def identify(transport: Transport, unit: int, timeout: float) -> dict[str, str]:
    """The device identification objects of `unit` (FC 43/14, basic then regular)."""
    got: dict[str, str] = {}
    for code in (1, 2):
        first = 0 if code == 1 else 3
        for _ in range(8):  # "more follows": ask on from the next object
            answer = transport.exchange_raw(unit, bytes((43, 14, code, first)), timeout)
            if answer[0] == 43 | 0x80:
                if code == 1:
                    raise DeviceException(answer[1])
                return got
            if len(answer) < 7 or answer[:2] != b"\x2b\x0e":
                raise BadFrame(f"not a device identification answer: {answer.hex()}")
            more, nxt, n = answer[4], answer[5], answer[6]
            i = 7
            for _ in range(n):
                oid, size = answer[i], answer[i + 1]
                value = answer[i + 2 : i + 2 + size].decode("latin-1").strip()
                got[OBJECTS.get(oid, f"object_{oid}")] = value
                i += 2 + size
            if not more:
                break
            first = nxt
    return got


def scan(cfg: ModbusConfig, units: list[int], timeout: float) -> Iterator[Found]:
    """The units of `units` that answer on the bus `cfg`, in order (PortError if the bus
    cannot be opened)."""
    transport = open_transport(cfg)
    try:
        request = read_request(3, 0, 1)
        for unit in units:
            try:
                regs = transport.exchange(unit, request, timeout)
                answer = f"holding 0 = {regs[0]}" if regs else "answered"
            except DeviceException as e:
                answer = f"reading holding 0: {e}"
            except (Timeout, BadFrame):
                continue
            found = Found(unit, answer)
            try:
                found.ident = identify(transport, unit, timeout)
            except PortError:
                raise
            except ModbusError as e:
                found.ident_error = str(e)
            except (IndexError, struct.error):
                found.ident_error = "malformed device identification"
            yield found
    finally:
        transport.close()


def _name(found: Found) -> str:
    base = found.ident.get("product_code") or found.ident.get("product_name") or "unit"
    slug = re.sub(r"[^a-z0-9]+", "_", base.lower()).strip("_") or "unit"
    return f"{slug}_{found.unit}"


def suggest(cfg: ModbusConfig, found: list[Found], name: str = "bus") -> str:
    """TOML for a `[[driver]]` with a `[[driver.device]]` per unit found."""
    lines = ["[[driver]]", f'name = "{name}"', 'type = "modbus"']
    if cfg.serial:
        if cfg.transport != "rtu":
            lines.append(f'transport = "{cfg.transport}"')
        lines += [
            f'port = "{cfg.port}"',
            f"baudrate = {cfg.baudrate}",
            f'parity = "{cfg.parity}"',
        ]
        if cfg.stopbits != 1:
            lines.append(f"stopbits = {cfg.stopbits}")
    else:
        lines += [
            f'transport = "{cfg.transport}"',
            f'host = "{cfg.host}"',
            f"tcp_port = {cfg.tcp_port}",
        ]
    for f in found:
        lines += ["", "[[driver.device]]", f'name = "{_name(f)}"', f"unit = {f.unit}"]
        for key, value in f.ident.items():
            lines.append(f"# {key}: {value}")
        lines += [
            "",
            "[[driver.device.register]]  # from the device's register map",
            'name = "r0"',
            "address = 0",
        ]
    return "\n".join(lines) + "\n"
