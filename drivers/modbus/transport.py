"""Transports: one open connection to a bus, carrying request/answer exchanges.

`open_transport(cfg)` opens the serial port (RTU or ASCII, exclusively), the
TCP connection (Modbus TCP, or RTU frames over TCP to a serial server) or a
UDP socket (Modbus UDP: MBAP frames, one a datagram; or RTU frames, one a
datagram) and raises `PortError` when it cannot. A transport carries one
request at a time, in either of two ways: `exchange(unit, request, timeout)`
sends one request PDU and waits for the parsed answer (the registers or bits
read, or None for a write); or `begin(...)` sends it and returns the
deadline, and the caller, waiting on `fd` among other things, calls `answer()`
when `fd` is readable (NOT_YET until the answer is complete) or `expired()`
at the deadline. `close()` releases the port; it is safe twice.

RTU: before each request the 3.5-character silence is kept (a fixed 1.75 ms
above 19200 baud), waiting only for the part not already elapsed since the
last byte on the line. The answer is read to exactly its expected length, or
to 5 bytes as soon as the function code carries the exception bit, and its CRC
checked; after a timeout or a bad frame the line is read until silent, so a
late answer never passes for the next one. ASCII: ':' + hex + LRC + CR LF, an
answer ends at its line feed. TCP: the MBAP header's transaction
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
from typing import Any, NoReturn

import serial
import serial.rs485

from . import pdu
from .config import SERIAL, ModbusConfig
from .crc import crc_ok, with_crc
from .errors import BadFrame, ModbusError, PortError, Timeout

__all__ = [
    "Transport",
    "NOT_YET",
    "RtuTransport",
    "AsciiTransport",
    "ascii_frame",
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

    def read_some(self, n: int) -> bytes:
        """Up to `n` bytes already received, b"" when none (never waits)."""
        try:
            data = self._read(n)
        except BlockingIOError:
            return b""
        except OSError as e:
            raise PortError(f"read failed: {e.strerror or e}") from None
        if not data:
            raise PortError("the port was closed at the other end (unplugged?)")
        return data

    def wait(self, seconds: float) -> None:
        """Wait until there is something to read, at most `seconds`."""
        self._poll.poll(max(0.0, seconds) * 1000.0)

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

    def read_some(self, n: int) -> bytes:
        # with VMIN = VTIME = 0 a tty reads b"" when it has nothing: only a port
        # that polls readable (bytes may have come just after the read) and
        # then still gives nothing is gone
        for _ in range(2):
            try:
                data = os.read(self.fd, n)
            except BlockingIOError:
                return b""
            except OSError as e:
                raise PortError(f"read failed: {e.strerror or e}") from None
            if data or not self._poll.poll(0):
                return data
        raise PortError("the port was closed at the other end (unplugged?)")

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


class _DatagramStream(_SocketStream):
    """A connected UDP socket: each read is one whole datagram."""

    def __init__(self, sock: socket.socket, where: str) -> None:
        super().__init__(sock)
        self.where = where

    def read_some(self, n: int) -> bytes:
        while True:
            try:
                data = self.sock.recv(1024)
            except BlockingIOError:
                return b""
            except ConnectionRefusedError:
                raise PortError(f"{self.where}: port unreachable (nothing listening)") from None
            except OSError as e:
                raise PortError(f"read failed: {e.strerror or e}") from None
            if data:
                return data  # an empty datagram is nothing

    def discard(self) -> None:
        while self.read_some(1024):
            pass

    def send(self, data: bytes) -> None:
        try:
            self.sock.send(data)
        except OSError as e:
            raise PortError(f"send failed: {e.strerror or e}") from None


class _NotYet:
    def __repr__(self) -> str:
        return "NOT_YET"


#: what `Transport.answer()` returns while the answer is still incomplete
NOT_YET: Any = _NotYet()

Answer = list[int] | list[bool] | None


class Transport:
    """An open bus, one request at a time: `exchange` (blocking), or `begin`, then
    `answer()` whenever `fd` is readable, and `expired()` once the deadline passed."""

    def __init__(self, stream: _Stream, where: str) -> None:
        self.stream = stream
        self.where = where
        self.fd = stream.fd
        self._closed = False
        self.connecting = False  # a TCP connection still being made (see `connected`)
        self._unit = 0
        self._request = b""
        self._timeout = 0.0
        self._tolerant = False
        self._raw = False

    def begin(
        self, unit: int, request: bytes, timeout: float, tolerant: bool = False, raw: bool = False
    ) -> float:
        """Send `request` to `unit`; returns the monotonic deadline of its answer.
        `tolerant` (TCP, UDP): take the answer whatever its transaction id and unit id,
        for gateways that do not echo them. `raw`: `answer()` gives the answer PDU
        unparsed (for function codes whose answers have no length known in advance)."""
        self._unit, self._request, self._timeout = unit, request, timeout
        self._tolerant, self._raw = tolerant, raw
        return self._send()

    def connected(self) -> None:
        """A connection made without waiting (`wait=False`) is done: its socket became
        writable. Raises PortError when the connection failed."""
        sock = getattr(self.stream, "sock", None)
        if sock is not None:
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                raise PortError(f"cannot connect to {self.where}: {os.strerror(code)}")
        self.connecting = False

    def answer(self) -> Any:
        """The answer to the request begun, from the bytes that came so far (never
        waits): the registers or bits read, None for a write, the PDU when `raw`;
        NOT_YET while incomplete. Raises BadFrame, DeviceException, PortError."""
        raise NotImplementedError

    def expired(self) -> NoReturn:
        """The deadline passed without a complete answer: tidy the line, raise Timeout."""
        raise Timeout(f"unit {self._unit}: no answer within {self._timeout:g} s")

    def exchange(self, unit: int, request: bytes, timeout: float, tolerant: bool = False) -> Answer:
        """One request and its parsed answer, waiting for it."""
        return self._wait(self.begin(unit, request, timeout, tolerant))

    def exchange_raw(self, unit: int, request: bytes, timeout: float) -> bytes:
        """Any request PDU; its answer PDU unparsed (for function codes whose answers
        have no length known in advance, such as FC 43). Raises Timeout, BadFrame."""
        return self._wait(self.begin(unit, request, timeout, raw=True))

    def _wait(self, deadline: float) -> Any:
        while True:
            got = self.answer()
            if got is not NOT_YET:
                return got
            left = deadline - time.monotonic()
            if left <= 0:
                self.expired()
            self.stream.wait(left)

    def _send(self) -> float:
        raise NotImplementedError

    def _parse(self, body: bytes) -> Any:
        return body if self._raw else pdu.parse_response(self._request, body)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.stream.close()


class RtuTransport(Transport):
    """RTU frames (unit, PDU, CRC) with the inter-frame silence, on serial, TCP or UDP."""

    def __init__(self, stream: _Stream, where: str, gap: float, char_time: float) -> None:
        super().__init__(stream, where)
        self.gap = gap
        self.char_time = char_time
        self._free_at = time.monotonic() + gap
        self._buf = b""
        self._need = 0

    def _send(self) -> float:
        adu = with_crc(bytes((self._unit,)) + self._request)
        self._need = 256 if self._raw else pdu.response_length(self._request) + 3
        wait = self._free_at - time.monotonic()
        if wait > 0:
            time.sleep(wait)  # the silence: at most 3.5 characters
        self.stream.discard()
        self.stream.send(adu)
        self._buf = b""
        return time.monotonic() + self._timeout + (len(adu) + self._need) * self.char_time

    def answer(self) -> Any:
        stream = self.stream
        while True:
            if self._raw:
                if len(self._buf) >= 5 and crc_ok(self._buf):  # ends where its CRC checks
                    break
                if len(self._buf) >= 256:
                    self._bad(BadFrame(f"unit {self._unit}: no frame in {self._buf.hex()}", True))
            elif len(self._buf) >= self._need:
                break
            data = stream.read_some(self._need - len(self._buf))
            if not data:
                return NOT_YET
            self._buf += data
            if not self._raw and len(self._buf) >= 2 and self._buf[1] & 0x80:
                self._need = 5
                self._buf = self._buf[:5]  # a byte after the exception frame is line noise
        buf = self._buf
        if not crc_ok(buf):
            self._bad(BadFrame(f"unit {self._unit}: CRC error in {buf.hex()}", crc=True))
        if self._raw:
            self.stream.settle(max(self.gap, 0.002), self._timeout)
        self._free_at = time.monotonic() + self.gap
        if buf[0] != self._unit:
            raise BadFrame(f"answer from unit {buf[0]} to a request for unit {self._unit}")
        return self._parse(buf[1:-2])

    def _bad(self, e: ModbusError) -> NoReturn:
        """Let the line fall silent (a late or broken answer must not pass for the next)."""
        self.stream.settle(max(self.gap, 0.002), self._timeout)
        self._free_at = time.monotonic() + self.gap
        raise e

    def expired(self) -> NoReturn:
        n, need = len(self._buf), self._need
        got = f"{n} of {need} bytes" if n and not self._raw else f"{n} bytes" if n else "no answer"
        self._bad(Timeout(f"unit {self._unit}: {got} within {self._timeout:g} s"))


class AsciiTransport(Transport):
    """Modbus ASCII: ':' + the frame (unit, PDU, LRC) in hex + CR LF, on a serial line.

    A frame ends at its line feed, so answers need no length known in advance;
    the LRC is the two's complement of the sum of the frame's bytes."""

    def __init__(self, stream: _Stream, where: str, char_time: float) -> None:
        super().__init__(stream, where)
        self.char_time = char_time
        self._buf = b""

    def _send(self) -> float:
        frame = ascii_frame(bytes((self._unit,)) + self._request)
        self.stream.discard()
        self.stream.send(frame)
        self._buf = b""
        need = 2 * (256 if self._raw else pdu.response_length(self._request) + 2) + 3
        return time.monotonic() + self._timeout + (len(frame) + need) * self.char_time

    def answer(self) -> Any:
        while (end := self._buf.find(b"\n")) < 0:
            if len(self._buf) > 2 * 256 + 3:
                self._bad(BadFrame(f"unit {self._unit}: no frame end in {self._buf[:40]!r}"))
            data = self.stream.read_some(513)
            if not data:
                return NOT_YET
            self._buf += data
        line = self._buf[:end]
        start = line.rfind(b":")
        try:
            if start < 0:
                raise ValueError("no ':'")
            data = bytes.fromhex(line[start + 1 :].rstrip(b"\r").decode("ascii"))
        except ValueError:
            self._bad(BadFrame(f"unit {self._unit}: not an ASCII frame: {line!r}", crc=True))
        if len(data) < 3 or sum(data) & 0xFF:
            self._bad(BadFrame(f"unit {self._unit}: LRC error in {line!r}", crc=True))
        if data[0] != self._unit:
            raise BadFrame(f"answer from unit {data[0]} to a request for unit {self._unit}")
        return self._parse(data[1:-1])

    def _bad(self, e: ModbusError) -> NoReturn:
        self.stream.settle(0.002 + 20 * self.char_time, self._timeout)
        raise e

    def expired(self) -> NoReturn:
        got = f"{len(self._buf)} bytes" if self._buf else "no answer"
        self._bad(Timeout(f"unit {self._unit}: {got} within {self._timeout:g} s"))


def ascii_frame(data: bytes) -> bytes:
    """The Modbus ASCII frame of `data` (unit and PDU): ':', hex with its LRC, CR LF."""
    lrc = -sum(data) & 0xFF
    return b":" + (data + bytes((lrc,))).hex().upper().encode("ascii") + b"\r\n"


class TcpTransport(Transport):
    """Modbus TCP: MBAP header with transaction ids, no CRC."""

    def __init__(self, stream: _Stream, where: str) -> None:
        super().__init__(stream, where)
        self._tid = 0
        self._buf = bytearray()  # bytes past the last answer taken (a late answer, say)

    def _send(self) -> float:
        self._tid = tid = (self._tid + 1) & 0xFFFF
        if self._tolerant:  # no id to tell a late answer by: drop it before asking
            self.stream.discard()
            self._buf.clear()
        request = self._request
        self.stream.send(struct.pack(">HHHB", tid, 0, len(request) + 1, self._unit) + request)
        return time.monotonic() + self._timeout

    def answer(self) -> Any:
        buf = self._buf
        while True:
            while len(buf) >= 7:
                t, proto, length, u = struct.unpack_from(">HHHB", buf)
                if proto != 0 or not 3 <= length <= 254:
                    head = bytes(buf[:7]).hex()
                    buf.clear()
                    raise PortError(
                        f"malformed MBAP header {head}: stream out of step", count="crc"
                    )
                if len(buf) < 6 + length:
                    break
                body = bytes(buf[7 : 6 + length])
                del buf[: 6 + length]
                if self._tolerant:
                    return self._parse(body)
                if t != self._tid:
                    continue  # a late answer to an earlier request
                if u != self._unit and not self._raw:
                    raise BadFrame(f"answer from unit {u} to a request for unit {self._unit}")
                return self._parse(body)
            data = self.stream.read_some(4096)
            if not data:
                return NOT_YET
            buf += data

    def expired(self) -> NoReturn:
        if self._buf:  # half a frame: the stream is out of step
            self._buf.clear()
            raise PortError(f"unit {self._unit}: answer cut short")
        super().expired()


class UdpTransport(Transport):
    """Modbus UDP: one MBAP frame a datagram; an answer with another transaction id
    (a late one) is skipped. No connection: a host that is not listening shows as
    a timeout, or as a refused port when the host says so."""

    def __init__(self, sock: socket.socket, where: str) -> None:
        super().__init__(_DatagramStream(sock, where), where)
        self._tid = 0

    def _send(self) -> float:
        self._tid = tid = (self._tid + 1) & 0xFFFF
        if self._tolerant:
            self.stream.discard()
        request = self._request
        self.stream.send(struct.pack(">HHHB", tid, 0, len(request) + 1, self._unit) + request)
        return time.monotonic() + self._timeout

    def answer(self) -> Any:
        while True:
            data = self.stream.read_some(512)
            if not data:
                return NOT_YET
            if len(data) < 8:
                continue  # not a Modbus answer
            t, proto, length, u = struct.unpack_from(">HHHB", data)
            if proto != 0 or length != len(data) - 6:
                continue
            if self._tolerant:
                return self._parse(data[7:])
            if t != self._tid:
                continue
            if u != self._unit:
                raise BadFrame(f"answer from unit {u} to a request for unit {self._unit}")
            return self._parse(data[7:])


def _open_udp(cfg: ModbusConfig, host: str, tcp_port: int) -> Transport:
    where = f"{host}:{tcp_port} (udp)"
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    except OSError as e:
        raise PortError(f"{where}: {e.strerror or e}") from None
    try:
        sock.connect((host, tcp_port))
        sock.setblocking(False)
    except OSError as e:
        sock.close()
        raise PortError(f"cannot reach {where}: {e.strerror or e}") from None
    if cfg.transport == "udp":
        return UdpTransport(sock, where)
    return RtuTransport(_DatagramStream(sock, where), where, 0.0, 0.0)


def _open_serial(cfg: ModbusConfig) -> Transport:
    try:
        port = serial.Serial(
            port=cfg.port,
            baudrate=cfg.baudrate,
            bytesize=cfg.bytesize,
            parity=cfg.parity,
            stopbits=cfg.stopbits,
            timeout=0,
            exclusive=True,
        )
    except termios.error as e:
        # The port exists but refuses these settings (a pseudo-terminal takes no
        # parity; an adapter without this baud rate): name the port and the settings,
        # and let the line retry with backoff like any port that cannot be opened.
        why = e.args[1] if len(e.args) > 1 else e
        raise PortError(
            f"{cfg.port} refuses {cfg.baudrate} baud, {cfg.bytesize} data bits, "
            f"parity {cfg.parity!r}, {cfg.stopbits} stop bits: {why}"
            + (" (a pseudo-terminal takes parity 'N' only)" if cfg.parity != "N" else "")
        ) from None
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
    if cfg.transport == "ascii":
        bits = 1 + cfg.bytesize + (cfg.parity != "N") + cfg.stopbits
        return AsciiTransport(stream, str(cfg.port), bits / cfg.baudrate)
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


def _open_tcp(cfg: ModbusConfig, host: str, tcp_port: int, wait: bool) -> Transport:
    where = f"{host}:{tcp_port}"
    if wait:
        try:
            sock = socket.create_connection((host, tcp_port), timeout=cfg.timeout)
        except OSError as e:
            raise PortError(f"cannot connect to {where}: {e.strerror or e}") from None
    else:  # the caller waits for the socket to become writable, then calls `connected`
        try:
            info = socket.getaddrinfo(host, tcp_port, type=socket.SOCK_STREAM)[0]
            sock = socket.socket(info[0], info[1], info[2])
        except OSError as e:
            raise PortError(f"cannot connect to {where}: {e.strerror or e}") from None
        sock.setblocking(False)
        code = sock.connect_ex(info[4])
        if code not in (0, errno.EINPROGRESS):
            sock.close()
            raise PortError(f"cannot connect to {where}: {os.strerror(code)}")
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        stream = _SocketStream(sock)
    except BaseException:
        sock.close()
        raise
    t: Transport = (
        TcpTransport(stream, where) if cfg.transport == "tcp" else RtuTransport(stream, where, 0, 0)
    )
    t.connecting = not wait
    return t


def open_transport(
    cfg: ModbusConfig, host: str | None = None, tcp_port: int | None = None, wait: bool = True
) -> Transport:
    """Open the bus `cfg` describes (at `host`:`tcp_port` instead of the bus's own
    address when given); raises PortError naming the port and the reason. With
    `wait=False` a TCP connection may still be `connecting` when this returns."""
    if cfg.transport in SERIAL:
        return _open_serial(cfg)
    host = host or cfg.host
    assert host is not None
    tcp_port = tcp_port or cfg.tcp_port
    if cfg.transport in ("udp", "rtu_over_udp"):
        return _open_udp(cfg, host, tcp_port)
    return _open_tcp(cfg, host, tcp_port, wait)
