"""The `modbus` driver: Modbus RTU and TCP with its own framing on pyserial and sockets."""

from .config import DeviceConfig, ModbusConfig, RegisterConfig
from .driver import ModbusDriver

__all__ = ["ModbusDriver", "ModbusConfig", "DeviceConfig", "RegisterConfig"]
