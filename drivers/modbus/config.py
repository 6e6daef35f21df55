"""The Modbus driver's config keys (docs/design.md, section 3) as typed dataclasses.

`ModbusConfig` is one bus (`[[driver]]` with `type = "modbus"`): its transport
and timing. Each `DeviceConfig` (`[[driver.device]]`) is one unit id on it with
its own register map of `RegisterConfig`s (`[[driver.device.register]]`) and
the settings for its quirks (busy answers, sloppy gateways, one value per
read, one TCP client, a pause after connecting, swapped strings, addresses
counted from 1). Addresses are 0-based PDU addresses unless the device sets
`address_base`/`coil_base`. Every check names the key it is about.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from edgert.config import Invalid

__all__ = ["ModbusConfig", "DeviceConfig", "RegisterConfig", "STATUS_TYPES", "SIZES", "SERIAL"]

Table = Literal["coil", "discrete", "input", "holding"]
RegType = Literal[
    "bool",
    "int16",
    "uint16",
    "int32",
    "uint32",
    "int64",
    "uint64",
    "float32",
    "float64",
    "string",
    "int8",
    "uint8",
    "float16",
    "bcd16",
    "bcd32",
]
Order = Literal["big", "little"]

#: registers (16-bit words) taken by each numeric type
SIZES = {
    "int16": 1,
    "uint16": 1,
    "int32": 2,
    "uint32": 2,
    "float32": 2,
    "int64": 4,
    "uint64": 4,
    "float64": 4,
    "int8": 1,
    "uint8": 1,
    "float16": 1,
    "bcd16": 1,
    "bcd32": 2,
}

#: transports on a serial line (the others are on a network: `host`, `tcp_port`)
SERIAL = ("rtu", "ascii")

#: the most registers one write request (FC 16) carries
MAX_WRITE_REGISTERS = 123

#: point types the driver publishes for every device; registers may not use them
STATUS_TYPES = ("online", "errors_timeout", "errors_crc", "errors_exception")


@dataclass
class RegisterConfig:
    name: str = field(metadata={"name": True})
    address: int = field(metadata={"min": 0, "max": 65535})
    table: Table = "holding"
    type: RegType | None = None  # bool for coil/discrete (and with `bit`), else uint16
    word_order: Order = "big"
    byte_order: Order = "big"
    scale: float = 1.0
    offset: float = 0.0
    writable: bool = False
    count: int | None = field(default=None, metadata={"min": 1, "max": 125})
    bit: int | None = field(default=None, metadata={"min": 0, "max": 15})
    half: Literal["high", "low"] | None = None  # int8, uint8, string: which byte of a register
    encoding: Literal["utf-8", "latin-1", "utf-16"] = "utf-8"  # string
    poll_interval: float | None = field(default=None, metadata={"gt": 0})
    report: Literal["change", "always"] = "change"
    deadband: float = field(default=0.0, metadata={"min": 0})
    refresh: float | None = field(default=None, metadata={"gt": 0})
    min: float | None = None  # commands outside [min, max] are refused
    max: float | None = None

    @property
    def kind(self) -> str:
        """The value type, with the default filled in."""
        if self.type is not None:
            return self.type
        if self.table in ("coil", "discrete") or self.bit is not None:
            return "bool"
        return "uint16"

    @property
    def bits(self) -> bool:
        """True for coils and discrete inputs (addressed by bit, not register)."""
        return self.table in ("coil", "discrete")

    @property
    def masked(self) -> bool:
        """Part of a register (a bit, a byte): written with FC 22, the rest kept."""
        return not self.bits and (self.bit is not None or self.kind in ("int8", "uint8"))

    @property
    def size(self) -> int:
        """Bits (coil, discrete) or registers (input, holding) this value spans."""
        if self.bits or self.bit is not None:
            return 1
        if self.kind == "string":
            return self.count or 1
        return SIZES[self.kind]

    def check(self) -> None:
        kind = self.kind
        if self.name in STATUS_TYPES:
            raise Invalid("name", f"{self.name!r} is reserved for the device's status points")
        if self.bits and kind != "bool":
            raise Invalid("type", f"a {self.table} is a bool, not {kind}")
        if self.bits and self.bit is not None:
            raise Invalid("bit", f"a {self.table} is a single bit already")
        if not self.bits and kind == "bool" and self.bit is None:
            raise Invalid("type", f"a bool in a {self.table} register needs `bit` (0..15)")
        if self.bit is not None and kind != "bool":
            raise Invalid("bit", f'one bit of a register is a bool; remove `type = "{kind}"`')
        if kind == "string" and self.count is None:
            raise Invalid("count", 'type = "string" needs `count` (registers, 2 characters each)')
        if kind in ("int8", "uint8") and self.half is None:
            raise Invalid("half", f'a {kind} is one byte of a register: half = "high" or "low"')
        if kind not in ("int8", "uint8", "string") and self.half is not None:
            raise Invalid("half", "only type = int8, uint8 or string takes `half`")
        if kind == "string" and self.half is not None and self.encoding == "utf-16":
            raise Invalid("half", "a string one byte a register cannot be utf-16")
        if kind != "string" and self.encoding != "utf-8":
            raise Invalid("encoding", 'only type = "string" takes `encoding`')
        if kind != "string" and self.count is not None:
            raise Invalid("count", 'only type = "string" takes `count`')
        if kind in ("bool", "string") and (self.scale != 1.0 or self.offset != 0.0):
            raise Invalid("scale" if self.scale != 1.0 else "offset", f"does not apply to {kind}")
        if self.scale == 0.0:
            raise Invalid("scale", "must not be 0")
        if self.writable and self.table not in ("coil", "holding"):
            raise Invalid("writable", f"a {self.table} cannot be written (only coil and holding)")
        if self.writable and not self.bits and self.size > MAX_WRITE_REGISTERS:
            raise Invalid(
                "count",
                f"a writable register spans at most {MAX_WRITE_REGISTERS} registers "
                f"(one FC 16 request), not {self.size}",
            )
        if self.address + self.size > 65536:
            raise Invalid("address", f"{self.address} + {self.size} runs past 65535")
        if self.min is not None and self.max is not None and self.max < self.min:
            raise Invalid("max", f"must be >= min ({self.min})")
        if self.report == "always" and (self.deadband or self.refresh is not None):
            raise Invalid(
                "deadband" if self.deadband else "refresh", 'applies only to report = "change"'
            )


@dataclass
class DeviceConfig:
    name: str = field(metadata={"name": True})
    unit: int = field(metadata={"min": 0, "max": 255})
    register: list[RegisterConfig] = field(default_factory=list)
    # network transports: the device's own address (default: the bus's `host`, `tcp_port`);
    # devices at different addresses are polled side by side, one connection each
    host: str | None = None
    tcp_port: int | None = field(default=None, metadata={"min": 1, "max": 65535})
    max_registers_per_request: int = field(default=125, metadata={"min": 1, "max": 125})
    max_bits_per_request: int = field(default=2000, metadata={"min": 1, "max": 2000})
    max_gap: int = field(default=8, metadata={"min": 0})
    poll_interval: float | None = field(default=None, metadata={"gt": 0})
    pause_between_requests: float = field(default=0.0, metadata={"min": 0, "max": 60})
    probe_interval: float = field(default=5.0, metadata={"gt": 0})
    busy_retries: int = field(default=0, metadata={"min": 0, "max": 100})
    busy_retry_wait: float = field(default=0.1, metadata={"min": 0, "max": 10})
    tolerant_transaction_ids: bool = False
    one_request_per_register: bool = False
    close_connection_after_poll: bool = False
    pause_after_connect: float = field(default=0.0, metadata={"min": 0, "max": 60})
    string_byte_order: Order | None = None
    address_base: int = field(default=0, metadata={"min": 0, "max": 1})
    coil_base: int | None = field(default=None, metadata={"min": 0, "max": 1})

    def base(self, table: str) -> int:
        """What to subtract from a register's `address` to get its address on the wire."""
        if table in ("coil", "discrete") and self.coil_base is not None:
            return self.coil_base
        return self.address_base

    def check(self) -> None:
        seen: set[str] = set()
        for r in self.register:
            if r.address < self.base(r.table):
                raise Invalid(
                    "register",
                    f"register {r.name!r}: address {r.address} is below the device's "
                    f"base {self.base(r.table)} (address_base / coil_base)",
                )
            if self.string_byte_order is not None and r.kind == "string":
                r.byte_order = self.string_byte_order
            if r.name in seen:
                raise Invalid("register", f"duplicate register name {r.name!r}")
            seen.add(r.name)
            if not r.bits and r.size > self.max_registers_per_request:
                raise Invalid(
                    "max_registers_per_request",
                    f"register {r.name!r} spans {r.size} registers, more than {self.max_registers_per_request}",
                )


@dataclass
class ModbusConfig:
    transport: Literal["rtu", "ascii", "tcp", "rtu_over_tcp", "udp", "rtu_over_udp"] = "rtu"
    port: str | None = None
    baudrate: int = field(default=19200, metadata={"min": 300, "max": 4_000_000})
    bytesize: int = field(default=8, metadata={"min": 7, "max": 8})  # 7: ASCII only
    parity: Literal["N", "E", "O"] = "E"
    stopbits: int = field(default=1, metadata={"min": 1, "max": 2})
    # RS-485 direction control, for adapters that do not switch by themselves
    rs485: bool = False
    rs485_control: Literal["auto", "kernel", "software"] = "auto"
    rts_level_for_tx: bool = True
    rts_level_for_rx: bool = False
    delay_before_tx: float = field(default=0.0, metadata={"min": 0, "max": 1})
    delay_before_rx: float = field(default=0.0, metadata={"min": 0, "max": 1})
    host: str | None = None
    tcp_port: int = field(default=502, metadata={"min": 1, "max": 65535})
    timeout: float = field(default=0.5, metadata={"gt": 0, "max": 60})
    retries: int = field(default=1, metadata={"min": 0, "max": 10})
    poll_interval: float = field(default=1.0, metadata={"gt": 0})
    reopen_min: float = field(default=0.5, metadata={"gt": 0})
    reopen_max: float = field(default=10.0, metadata={"gt": 0})
    device: list[DeviceConfig] = field(default_factory=list)

    @property
    def serial(self) -> bool:
        """On a serial line (RTU, ASCII), not a network."""
        return self.transport in SERIAL

    def address(self, dev: DeviceConfig) -> tuple[str, int] | None:
        """The host and port the device is reached at; None on a serial line."""
        if self.serial:
            return None
        return (dev.host or self.host or "", dev.tcp_port or self.tcp_port)

    def check(self) -> None:
        if self.serial:
            if not self.port:
                raise Invalid(
                    "port",
                    f'transport = "{self.transport}" needs the serial device, e.g. "/dev/ttyUSB0"',
                )
            if self.host is not None:
                raise Invalid("host", "is for network transports (tcp, udp, rtu_over_...)")
            if self.bytesize == 7 and self.transport != "ascii":
                raise Invalid("bytesize", 'RTU frames are 8-bit; 7 is for transport = "ascii"')
        else:
            if not self.host and not (self.device and all(d.host for d in self.device)):
                raise Invalid(
                    "host", f'transport = "{self.transport}" needs `host` (or one per device)'
                )
            if self.port is not None:
                raise Invalid("port", "is the serial device of rtu and ascii; use tcp_port")
        if self.rs485 and not self.serial:
            raise Invalid("rs485", 'is for transport = "rtu" or "ascii" (a serial port)')
        if self.reopen_max < self.reopen_min:
            raise Invalid("reopen_max", f"must be >= reopen_min ({self.reopen_min})")
        names: set[str] = set()
        units: set[tuple[object, int]] = set()
        for d in self.device:
            if d.name in names:
                raise Invalid("device", f"duplicate device name {d.name!r}")
            if self.serial and (d.host is not None or d.tcp_port is not None):
                raise Invalid("device", f"device {d.name!r}: `host`/`tcp_port` on a serial line")
            where = self.address(d)
            if (where, d.unit) in units:
                at = f" at {where[0]}:{where[1]}" if where else ""
                raise Invalid("device", f"two devices with unit {d.unit}{at} (device {d.name!r})")
            if self.transport not in ("tcp", "udp") and not 1 <= d.unit <= 247:
                raise Invalid("device", f"device {d.name!r}: unit must be 1..247 on a serial line")
            names.add(d.name)
            units.add((where, d.unit))
