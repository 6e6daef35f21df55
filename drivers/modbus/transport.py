"""Transports: one open connection to a bus, carrying request/answer exchanges.

`open_transport(cfg)` opens the serial port (RTU, exclusively), the TCP
connection (Modbus TCP, or RTU frames over TCP to a serial server) or a UDP
socket (Modbus UDP: MBAP frames, one a datagram) and raises
`PortError` when it cannot. `exchange(unit, request, timeout)` sends one
request PDU and returns the parsed answer: the registers or bits read, or None
for a write. `close()` releases the port; it is safe twice.

RTU: before each request the 3.5-character silence is kept (a fixed 1.75 ms
above 19200 baud), waiting only for the part not already elapsed since the
last byte on the line. The answer is read to exactly its expected length, or
to 5 bytes as soon as the function code carries the exception bit, and its CRC
checked; after a timeout or a bad frame the line is read until silent, so a
late answer never passes for the next one. TCP: the MBAP header's transaction
id pairs answers with requests; a late answer to an earlier request is skipped
(with `tolerant`, for gateways that answer id 0 or unit 255, stale bytes are
dropped before each request and the answer taken whatever its ids). A stray
byte after an RTU exception answer is line noise, not part of the frame.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import struct
import termios
import time

import serial
import serial.rs485

from . import pdu
from .config import ModbusConfig
from .crc import crc_ok, with_crc
from .errors import BadFrame, PortError, Timeout

__all__ = [
    "Transport",
    "RtuTransport",
    "TcpTransport",
    "UdpTransport",
    "open_transport",
    "silence",
]

_IN = select.POLLIN | select.POLLERR | select.POLLHUP


def silence(baudrate: int) -> float:
    """The 3.5-character inter-frame silence (11 bits a character) in seconds."""
    return 0.00175 if baudrate > 19200 else 3.5 * 11 / baudrate


class _Stream:
    """A byte stream on a file descriptor, read with deadlines."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._poll = select.poll()
        self._poll.register(fd, _IN)

    def _read(self, n: int) -> bytes:
        raise NotImplementedError

    def _write(self, data: bytes) -> int:
        raise NotImplementedError

    def send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                n = self._write(view)
            except BlockingIOError:
                select.select([], [self.fd], [], 0.1)
                continue
            except OSError as e:
                raise PortError(f"write failed: {e.strerror or e}") from None
            view = view[n:]

    def recv(self, n: int, deadline: float) -> bytes:
        """Up to `n` bytes, at least one; Timeout at `deadline`."""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Timeout("no answer")
            if not self._poll.poll(left * 1000.0):
                continue
            try:
                data = self._read(n)
            except BlockingIOError:
                continue
            except OSError as e:
                raise PortError(f"read failed: {e.strerror or e}") from None
            if not data:
                raise PortError("the port was closed at the other end (unplugged?)")
            return data

    def settle(self, quiet: float, limit: float) -> None:
        """Read and drop bytes until none came for `quiet` seconds (or `limit` passed)."""
        end = time.monotonic() + limit
        while time.monotonic() < end:
            if not self._poll.poll(quiet * 1000.0):
                return
            try:
                if not self._read(4096):
                    return
            except BlockingIOError:
                continue
            except OSError:
                return

    def discard(self) -> None:
        """Drop anything already received."""

    def close(self) -> None:
        raise NotImplementedError


class _SerialStream(_Stream):
    def __init__(self, port: serial.Serial, rts: tuple[bool, bool, float, float] | None) -> None:
        self.port = port
        self.rts = rts  # software direction control: (tx level, rx level, delays)
        super().__init__(port.fileno())
        termios.tcflush(self.fd, termios.TCIOFLUSH)

    def send(self, data: bytes) -> None:
        if self.rts is None:
            return super().send(data)
        tx, rx, before_tx, before_rx = self.rts
        try:
            self.port.rts = tx
            if before_tx:
                time.sleep(before_tx)
            super().send(data)
            termios.tcdrain(self.fd)  # the last bit is on the line
            if before_rx:
                time.sleep(before_rx)
            self.port.rts = rx
        except (OSError, termios.error) as e:
            raise PortError(f"RS-485 direction (RTS) failed: {e}") from None

    def _read(self, n: int) -> bytes:
        return os.read(self.fd, n)

    def _write(self, data: memoryview) -> int:  # type: ignore[override]
        return os.write(self.fd, data)

    def discard(self) -> None:
        try:
            termios.tcflush(self.fd, termios.TCIFLUSH)
        except termios.error as e:
            raise PortError(f"flush failed: {e}") from None

    def close(self) -> None:
        self.port.close()


class _SocketStream(_Stream):
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        super().__init__(sock.fileno())

    def _read(self, n: int) -> bytes:
        return self.sock.recv(n)

    def _write(self, data: memoryview) -> int:  # type: ignore[override]
        return self.sock.send(data)

    def discard(self) -> None:
        while True:
            try:
                data = self.sock.recv(4096, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            except OSError as e:
                raise PortError(f"read failed: {e.strerror or e}") from None
            if not data:
                raise PortError("connection closed by the server")

    def close(self) -> None:
        self.sock.close()


class Transport:
    """An open bus: `exchange` requests, then `close`."""

    def __init__(self, stream: _Stream, where: str) -> None:
        self.stream = stream
        self.where = where
        self._closed = False

    def exchange(
        self, unit: int, request: bytes, timeout: float, tolerant: bool = False
    ) -> list[int] | list[bool] | None:
        """One request and its parsed answer. `tolerant` (TCP): take the answer whatever
        its transaction id and unit id, for gateways that do not echo them."""
        raise NotImplementedError

    def exchange_raw(self, unit: int, request: bytes, timeout: float) -> bytes:
        """Any request PDU; its answer PDU unparsed (for function codes whose answers
        have no length known in advance, such as FC 43). Raises Timeout, BadFrame."""
        raise NotImplementedError

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.stream.close()


class RtuTransport(Transport):
    """RTU frames (unit, PDU, CRC) with the inter-frame silence, on serial or TCP."""

    def __init__(self, stream: _Stream, where: str, gap: float, char_time: float) -> None:
        super().__init__(stream, where)
        self.gap = gap
        self.char_time = char_time
        self._free_at = time.monotonic() + gap

    def exchange(
        self, unit: int, request: bytes, timeout: float, tolerant: bool = False
    ) -> list[int] | list[bool] | None:
        adu = with_crc(bytes((unit,)) + request)
        need = pdu.response_length(request) + 3
        wait = self._free_at - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        stream = self.stream
        stream.discard()
        stream.send(adu)
        deadline = time.monotonic() + timeout + (len(adu) + need) * self.char_time
        buf = b""
        try:
            while len(buf) < need:
                buf += stream.recv(need - len(buf), deadline)
                if len(buf) >= 2 and buf[1] & 0x80:
                    need = 5
                    buf = buf[:need]  # a byte after the exception frame is line noise
        except Timeout:
            stream.settle(max(self.gap, 0.002), timeout)
            self._free_at = time.monotonic() + self.gap
            got = f"{len(buf)} of {need} bytes" if buf else "no answer"
            raise Timeout(f"unit {unit}: {got} within {timeout:g} s") from None
        if not crc_ok(buf):
            stream.settle(max(self.gap, 0.002), timeout)
            self._free_at = time.monotonic() + self.gap
            raise BadFrame(f"unit {unit}: CRC error in {buf.hex()}", crc=True)
        self._free_at = time.monotonic() + self.gap
        if buf[0] != unit:
            raise BadFrame(f"answer from unit {buf[0]} to a request for unit {unit}")
        return pdu.parse_response(request, buf[1:-2])

    def exchange_raw(self, unit: int, request: bytes, timeout: float) -> bytes:
        adu = with_crc(bytes((unit,)) + request)
        wait = self._free_at - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        self.stream.discard()
        self.stream.send(adu)
        deadline = time.monotonic() + timeout + (len(adu) + 256) * self.char_time
        buf = b""
        try:
            while not (len(buf) >= 5 and crc_ok(buf)):  # ends where its CRC checks
                buf += self.stream.recv(256 - len(buf), deadline)
                if len(buf) >= 256:
                    raise BadFrame(f"unit {unit}: no frame in {buf.hex()}", crc=True)
        except Timeout:
            raise Timeout(f"unit {unit}: {len(buf)} bytes within {timeout:g} s") from None
        finally:
            self.stream.settle(max(self.gap, 0.002), timeout)
            self._free_at = time.monotonic() + self.gap
        if buf[0] != unit:
            raise BadFrame(f"answer from unit {buf[0]} to a request for unit {unit}")
        return buf[1:-2]


class TcpTransport(Transport):
    """Modbus TCP: MBAP header with transaction ids, no CRC."""

    def __init__(self, stream: _Stream, where: str) -> None:
        super().__init__(stream, where)
        self._tid = 0

    def _exact(self, n: int, deadline: float) -> bytes:
        buf = b""
        while len(buf) < n:
            buf += self.stream.recv(n - len(buf), deadline)
        return buf

    def exchange(
        self, unit: int, request: bytes, timeout: float, tolerant: bool = False
    ) -> list[int] | list[bool] | None:
        self._tid = tid = (self._tid + 1) & 0xFFFF
        if tolerant:  # no id to tell a late answer by: drop it before asking
            self.stream.discard()
        self.stream.send(struct.pack(">HHHB", tid, 0, len(request) + 1, unit) + request)
        deadline = time.monotonic() + timeout
        while True:
            try:
                head = self._exact(7, deadline)
            except Timeout:
                raise Timeout(f"unit {unit}: no answer within {timeout:g} s") from None
            t, proto, length, u = struct.unpack(">HHHB", head)
            if proto != 0 or not 3 <= length <= 254:
                raise PortError(
                    f"malformed MBAP header {head.hex()}: stream out of step", count="crc"
                )
            try:
                body = self._exact(length - 1, deadline)
            except Timeout:  # half a frame: the stream is out of step
                raise PortError(f"unit {unit}: answer cut short") from None
            if tolerant:
                return pdu.parse_response(request, body)
            if t != tid:
                continue  # a late answer to an earlier request
            if u != unit:
                raise BadFrame(f"answer from unit {u} to a request for unit {unit}")
            return pdu.parse_response(request, body)

    def exchange_raw(self, unit: int, request: bytes, timeout: float) -> bytes:
        self._tid = tid = (self._tid + 1) & 0xFFFF
        self.stream.send(struct.pack(">HHHB", tid, 0, len(request) + 1, unit) + request)
        deadline = time.monotonic() + timeout
        while True:
            try:
                head = self._exact(7, deadline)
                t, proto, length, u = struct.unpack(">HHHB", head)
                if proto != 0 or not 3 <= length <= 254:
                    raise PortError(f"malformed MBAP header {head.hex()}", count="crc")
                body = self._exact(length - 1, deadline)
            except Timeout:
                raise Timeout(f"unit {unit}: no answer within {timeout:g} s") from None
            if t == tid:
                return body


class UdpTransport(Transport):
    """Modbus UDP: one MBAP frame a datagram; an answer with another transaction id
    (a late one) is skipped. No connection: a host that is not listening shows as
    a timeout, or as a refused port when the host says so."""

    def __init__(self, sock: socket.socket, where: str) -> None:
        super().__init__(_SocketStream(sock), where)
        self.sock = sock
        self._tid = 0

    def _datagram(self, deadline: float) -> bytes:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Timeout("no answer")
            if not self.stream._poll.poll(left * 1000.0):
                continue
            try:
                return self.sock.recv(512)
            except BlockingIOError:
                continue
            except ConnectionRefusedError:
                raise PortError(f"{self.where}: port unreachable (nothing listening)") from None
            except OSError as e:
                raise PortError(f"read failed: {e.strerror or e}") from None

    def _ask(self, unit: int, request: bytes, timeout: float, tolerant: bool) -> bytes:
        self._tid = tid = (self._tid + 1) & 0xFFFF
        if tolerant:
            self.stream.discard()
        try:
            self.sock.send(struct.pack(">HHHB", tid, 0, len(request) + 1, unit) + request)
        except OSError as e:
            raise PortError(f"send failed: {e.strerror or e}") from None
        deadline = time.monotonic() + timeout
        while True:
            try:
                data = self._datagram(deadline)
            except Timeout:
                raise Timeout(f"unit {unit}: no answer within {timeout:g} s") from None
            if len(data) < 8:
                continue  # not a Modbus answer
            t, proto, length, u = struct.unpack_from(">HHHB", data)
            if proto != 0 or length != len(data) - 6:
                continue
            if tolerant:
                return data[7:]
            if t != tid:
                continue
            if u != unit:
                raise BadFrame(f"answer from unit {u} to a request for unit {unit}")
            return data[7:]

    def exchange(
        self, unit: int, request: bytes, timeout: float, tolerant: bool = False
    ) -> list[int] | list[bool] | None:
        return pdu.parse_response(request, self._ask(unit, request, timeout, tolerant))

    def exchange_raw(self, unit: int, request: bytes, timeout: float) -> bytes:
        return self._ask(unit, request, timeout, False)


def _open_udp(cfg: ModbusConfig) -> Transport:
    where = f"{cfg.host}:{cfg.tcp_port} (udp)"
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    except OSError as e:
        raise PortError(f"{where}: {e.strerror or e}") from None
    try:
        sock.connect((cfg.host, cfg.tcp_port))
        sock.setblocking(False)
    except OSError as e:
        sock.close()
        raise PortError(f"cannot reach {where}: {e.strerror or e}") from None
    return UdpTransport(sock, where)


def _open_serial(cfg: ModbusConfig) -> Transport:
    try:
        port = serial.Serial(
            port=cfg.port,
            baudrate=cfg.baudrate,
            bytesize=8,
            parity=cfg.parity,
            stopbits=cfg.stopbits,
            timeout=0,
            exclusive=True,
        )
    except (serial.SerialException, OSError, ValueError) as e:
        msg = str(e)
        if "exclusively lock" in msg or getattr(e, "errno", None) == errno.EBUSY:
            msg = f"{cfg.port} is busy (held by another process): {msg}"
        raise PortError(msg) from None
    try:
        rts = _rs485(cfg, port) if cfg.rs485 else None
        stream = _SerialStream(port, rts)
    except PortError:
        port.close()
        raise
    except (OSError, termios.error) as e:
        port.close()
        raise PortError(f"{cfg.port}: {e}") from None
    return RtuTransport(stream, str(cfg.port), silence(cfg.baudrate), 11 / cfg.baudrate)


def _rs485(cfg: ModbusConfig, port: serial.Serial) -> tuple[bool, bool, float, float] | None:
    """Set up RS-485 direction control: the kernel's (TIOCSRS485, through pyserial) where
    the adapter's driver has it, else RTS toggled around each request; None: the kernel's."""
    levels = (cfg.rts_level_for_tx, cfg.rts_level_for_rx, cfg.delay_before_tx, cfg.delay_before_rx)
    if cfg.rs485_control != "software":
        try:
            port.rs485_mode = serial.rs485.RS485Settings(
                rts_level_for_tx=cfg.rts_level_for_tx,
                rts_level_for_rx=cfg.rts_level_for_rx,
                delay_before_tx=cfg.delay_before_tx,
                delay_before_rx=cfg.delay_before_rx,
            )
            return None
        except (ValueError, OSError) as e:
            if cfg.rs485_control == "kernel":
                raise PortError(f"{cfg.port}: kernel RS-485 mode refused: {e}") from None
    try:
        port.rts = cfg.rts_level_for_rx
    except (OSError, ValueError) as e:
        raise PortError(f"{cfg.port}: cannot drive RTS for RS-485: {e}") from None
    return levels


def _open_tcp(cfg: ModbusConfig) -> Transport:
    where = f"{cfg.host}:{cfg.tcp_port}"
    try:
        sock = socket.create_connection((cfg.host, cfg.tcp_port), timeout=cfg.timeout)
    except OSError as e:
        raise PortError(f"cannot connect to {where}: {e.strerror or e}") from None
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        stream = _SocketStream(sock)
    except BaseException:
        sock.close()
        raise
    if cfg.transport == "tcp":
        return TcpTransport(stream, where)
    return RtuTransport(stream, where, 0.0, 0.0)


def open_transport(cfg: ModbusConfig) -> Transport:
    """Open the bus `cfg` describes; raises PortError naming the port and the reason."""
    if cfg.transport == "rtu":
        return _open_serial(cfg)
    return _open_udp(cfg) if cfg.transport == "udp" else _open_tcp(cfg)
