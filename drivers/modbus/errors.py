"""What can go wrong on a Modbus bus, as exceptions the driver counts by kind.

`Timeout` (no complete answer in time), `BadFrame` (CRC error or a malformed or
mismatched answer), `DeviceException` (the device answered with an exception
code) concern one device; `PortError` (the serial port or TCP connection failed)
concerns the whole bus, which is then closed and re-opened with backoff.
"""

from __future__ import annotations

__all__ = [
    "ModbusError",
    "Timeout",
    "BadFrame",
    "DeviceException",
    "PortError",
    "EXCEPTION_NAMES",
    "GATEWAY_NO_ANSWER",
    "BUSY",
]

EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}


class ModbusError(Exception):
    """Base of the errors of one request."""


class Timeout(ModbusError):
    """No complete answer within the timeout."""


class BadFrame(ModbusError):
    """An answer that fails its CRC (`crc=True`) or does not fit the request."""

    def __init__(self, message: str, crc: bool = False) -> None:
        super().__init__(message)
        self.crc = crc


class DeviceException(ModbusError):
    """The device answered with Modbus exception `code`."""

    def __init__(self, code: int) -> None:
        super().__init__(f"exception {code} ({EXCEPTION_NAMES.get(code, 'unknown')})")
        self.code = code


class PortError(ModbusError):
    """The port or connection is unusable (unplugged, refused, closed).

    `count` names the device counter it moves when it broke an exchange:
    "timeout" (no complete answer, the default) or "crc" (a malformed answer).
    """

    def __init__(self, message: str, count: str = "timeout") -> None:
        super().__init__(message)
        self.count = count


#: exception codes by which a gateway says the device behind it did not answer
GATEWAY_NO_ANSWER = (10, 11)
#: "server device busy": worth asking again after a wait
BUSY = 6
