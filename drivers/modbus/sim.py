"""Simulated Modbus devices: register maps served on a pseudo-terminal (RTU) or TCP.

`ModbusSim(config).run(announce)` creates a pseudo-terminal pair (RTU or
ASCII framing), or listens
on TCP, or UDP: one request a datagram), writes the address a driver should use (the pty's path, optionally
also a symlink `link`; or host:port) as one line to `announce`, and serves
until `stop()`. Each `[[device]]` is a unit id; a request for any other unit
gets no answer at all, as on a real bus, except that over Modbus TCP units 0
and 255 reach the first device (the server addressed itself). On a serial line
(and RTU over TCP) a write to unit 0 is a broadcast: every unit applies it and
none answers. Registers take the driver's register keys (table, address, type,
word_order, byte_order, scale, offset, count, bit) plus how their value moves:
`shape = "constant"` (`value`), `"counter"` (`value`, then `+ step` every
`period` seconds, rolling over at the end of its type's range) or `"sine"`
(between `min` and `max` over `period`). Writes (FC 5, 6, 15, 16, 22) land in
the device's memory; a register written to keeps the written value. With
`strict = true` a read or write of an address no register covers is answered
with exception 2, as many devices do; counts past the protocol's limits get
exception 3, unknown function codes exception 1; FC 43/14 answers the device
identification (`vendor`, `product_code`, `revision`, `product_name`).
Requests are framed by their exact length, with no wait for silence; a TCP
header whose length disagrees with its request closes that connection only.
Answers go out after `response_delay` seconds (over TCP without holding up
the other connections). With `hosts` one simulator serves the same devices at
several addresses (one port), e.g. 500 network devices on loopback.

Quirks of real devices, each a switch (see docs/modbus.md): `answer_exception`
(every request refused with that code: 10/11 is a TCP gateway whose device is
gone), `busy` (that many "busy" answers before each served request),
`trailing_byte` (a stray byte after each RTU answer), `transaction_id_zero`
and `answer_unit` (a TCP gateway that does not echo them), `one_value_per_read`
(a read over two values gets exception 3), `address_base` / `coil_base`
(addresses counted from 1), and per simulator `one_client` (a second TCP
connection is closed at once) and `connect_delay` (a request sooner after
connecting resets the connection).
"""

from __future__ import annotations

import array
import contextlib
import heapq
import math
import os
import select
import socket
import struct
import time
import tty
from dataclasses import dataclass, field
from typing import Any, Literal, TextIO

from edgert.config import Invalid
from edgert_drivers.modbus import pdu
from edgert_drivers.modbus.config import RegisterConfig, RegType
from edgert_drivers.modbus.crc import crc_ok, with_crc
from edgert_drivers.modbus.registers import encode, encode_mask
from edgert_drivers.modbus.transport import ascii_frame

__all__ = ["ModbusSim", "SimConfig", "SimDevice", "SimRegister"]


@dataclass
class SimRegister:
    address: int = field(metadata={"min": 0, "max": 65535})
    name: str = ""
    table: Literal["coil", "discrete", "input", "holding"] = "holding"
    type: RegType | None = None
    word_order: Literal["big", "little"] = "big"
    byte_order: Literal["big", "little"] = "big"
    scale: float = 1.0
    offset: float = 0.0
    count: int | None = field(default=None, metadata={"min": 1, "max": 125})
    bit: int | None = field(default=None, metadata={"min": 0, "max": 15})
    half: Literal["high", "low"] | None = None
    encoding: Literal["utf-8", "latin-1", "utf-16"] = "utf-8"
    shape: Literal["constant", "counter", "sine"] = "constant"
    value: bool | int | float | str = 0
    min: float = 0.0
    max: float = 100.0
    period: float = field(default=1.0, metadata={"gt": 0})
    step: float = 1.0

    def codec(self) -> RegisterConfig:
        """The driver-side description of this register, to encode its values."""
        reg = RegisterConfig(
            name=self.name or f"r{self.address}",
            address=self.address,
            table=self.table,
            type=self.type,
            word_order=self.word_order,
            byte_order=self.byte_order,
            scale=self.scale,
            offset=self.offset,
            count=self.count,
            bit=self.bit,
            half=self.half,
            encoding=self.encoding,
        )
        reg.check()
        return reg

    def check(self) -> None:
        kind = self.codec().kind  # raises Invalid naming the key, as the driver would
        if self.shape != "constant" and kind in ("bool", "string"):
            raise Invalid("shape", f"a {kind} can only be constant")


@dataclass
class SimDevice:
    unit: int = field(metadata={"min": 0, "max": 255})
    register: list[SimRegister] = field(default_factory=list)
    strict: bool = False
    # device identification (FC 43/14)
    vendor: str = "edgert"
    product_code: str = "SIM"
    revision: str = "1.0"
    product_name: str = "simulated Modbus device"
    # quirks of real devices, each off by default
    answer_exception: int | None = field(default=None, metadata={"min": 1, "max": 255})
    busy: int = field(default=0, metadata={"min": 0, "max": 100})
    trailing_byte: bool = False
    transaction_id_zero: bool = False
    answer_unit: int | None = field(default=None, metadata={"min": 0, "max": 255})
    one_value_per_read: bool = False
    address_base: int = field(default=0, metadata={"min": 0, "max": 1})
    coil_base: int | None = field(default=None, metadata={"min": 0, "max": 1})


@dataclass
class SimConfig:
    transport: Literal["rtu", "ascii", "tcp", "rtu_over_tcp", "udp"] = "rtu"
    link: str | None = None  # rtu: also make this symlink to the pty
    host: str = "127.0.0.1"
    tcp_port: int = field(default=5020, metadata={"min": 0, "max": 65535})  # 0: any free port
    # tcp: the same devices also at each of these addresses (the same port): many
    # network devices from one process, e.g. 127.0.0.2 ... on a loopback interface
    hosts: list[str] = field(default_factory=list)
    response_delay: float = field(default=0.0, metadata={"min": 0, "max": 10})
    one_client: bool = False  # tcp: a second connection is closed at once
    connect_delay: float = field(default=0.0, metadata={"min": 0, "max": 60})
    device: list[SimDevice] = field(default_factory=list)

    def check(self) -> None:
        units = [d.unit for d in self.device]
        if len(set(units)) != len(units):
            raise Invalid("device", "two devices with the same unit")


#: the most items one request may write or read (a count of 0 is never valid)
_MAX_COUNT = {1: 2000, 2: 2000, 3: 125, 4: 125, 15: 1968, 16: 123}
_INT_SPAN = {
    "int16": (-(2**15), 2**16),
    "uint16": (0, 2**16),
    "int32": (-(2**31), 2**32),
    "uint32": (0, 2**32),
    "int64": (-(2**63), 2**64),
    "uint64": (0, 2**64),
    "int8": (-128, 256),
    "uint8": (0, 256),
    "bcd16": (0, 10**4),
    "bcd32": (0, 10**8),
}


class _Reg:
    """A register's encoder and generator."""

    def __init__(self, cfg: SimRegister, start: float, base: int) -> None:
        self.cfg = cfg
        self.codec = cfg.codec()
        if cfg.address < base:
            raise Invalid("address", f"{cfg.address} is below the device's base {base}")
        self.codec.address -= base  # where it is on the wire
        self.start = start
        self.held = False
        self.lo = self.codec.address
        self.hi = self.lo + self.codec.size

    def value(self, now: float) -> Any:
        c = self.cfg
        if c.shape == "counter":
            v = c.value + c.step * int((now - self.start) / c.period)
            return self._wrap(v)
        if c.shape == "sine":
            phase = 2 * math.pi * ((now - self.start) % c.period) / c.period
            return c.min + (c.max - c.min) * (0.5 + 0.5 * math.sin(phase))
        return c.value

    def _wrap(self, v: float) -> float:
        """A counter rolls over at the end of its type's range, as a device's does."""
        span = _INT_SPAN.get(self.codec.kind)
        if span is None:
            return v
        lo, size = span
        raw = round((v - self.codec.offset) / self.codec.scale)
        raw = (raw - lo) % size + lo
        if self.codec.scale == 1.0 and self.codec.offset == 0.0:
            return raw
        return raw * self.codec.scale + self.codec.offset


class _Device:
    """One unit: its memory (four tables) and the registers that fill it."""

    def __init__(self, cfg: SimDevice, start: float) -> None:
        self.cfg = cfg
        self.mem = {
            "coil": bytearray(65536),
            "discrete": bytearray(65536),
            "holding": array.array("H", bytes(131072)),
            "input": array.array("H", bytes(131072)),
        }
        self.regs: dict[str, list[_Reg]] = {t: [] for t in self.mem}
        bit_base = cfg.address_base if cfg.coil_base is None else cfg.coil_base
        for r in cfg.register:
            reg = _Reg(r, start, bit_base if r.table in ("coil", "discrete") else cfg.address_base)
            self.regs[r.table].append(reg)
            self._store(reg, reg.value(start))
        self.dynamic = {
            t: [r for r in rs if r.cfg.shape != "constant"] for t, rs in self.regs.items()
        }
        self.busy_left = cfg.busy

    def _store(self, reg: _Reg, value: Any) -> None:
        c = reg.codec
        mem = self.mem[c.table]
        if c.bits:
            mem[c.address] = 1 if value else 0
        elif c.masked:
            and_mask, or_mask = encode_mask(c, value)
            mem[c.address] = (mem[c.address] & and_mask) | or_mask
        else:
            words = encode(c, value)
            mem[c.address : c.address + len(words)] = array.array("H", words)  # type: ignore[arg-type]

    def _mapped(self, table: str, address: int, count: int) -> bool:
        regs = self.regs[table]
        return all(any(r.lo <= a < r.hi for r in regs) for a in range(address, address + count))

    def read(self, table: str, address: int, count: int, now: float) -> list[int] | bytes:
        end = address + count
        if self.cfg.strict and not self._mapped(table, address, count):
            raise _Exc(2)
        if (
            self.cfg.one_value_per_read
            and sum(1 for r in self.regs[table] if r.lo < end and r.hi > address) > 1
        ):
            raise _Exc(3)  # a device that reads one value per request
        for r in self.dynamic[table]:
            if not r.held and r.lo < end and r.hi > address:
                self._store(r, r.value(now))
        return self.mem[table][address:end]  # type: ignore[return-value]

    def check_write(self, table: str, address: int, count: int) -> None:
        if self.cfg.strict and not self._mapped(table, address, count):
            raise _Exc(2)

    def written(self, table: str, address: int, count: int) -> None:
        for r in self.regs[table]:
            if r.lo < address + count and r.hi > address:
                r.held = True

    def handle(self, request: bytes, now: float) -> bytes:
        """The answer PDU to a request PDU (an exception answer when it is refused)."""
        fc = request[0]
        try:
            if self.cfg.answer_exception is not None:
                raise _Exc(self.cfg.answer_exception)
            if self.cfg.busy:
                if self.busy_left > 0:
                    self.busy_left -= 1
                    raise _Exc(6)
                self.busy_left = self.cfg.busy
            return self._handle(fc, request, now)
        except _Exc as e:
            return bytes((fc | 0x80, e.code))
        except (struct.error, IndexError):
            return bytes((fc | 0x80, 3))

    def _handle(self, fc: int, request: bytes, now: float) -> bytes:
        if fc in (1, 2, 3, 4):
            address, count = struct.unpack_from(">HH", request, 1)
            if not 1 <= count <= _MAX_COUNT[fc]:
                raise _Exc(3)
            if address + count > 65536:
                raise _Exc(2)
            table = ("coil", "discrete", "holding", "input")[fc - 1]
            data = self.read(table, address, count, now)
            if fc <= 2:
                packed = pdu.pack_bits([bool(b) for b in data])
                return bytes((fc, len(packed))) + packed
            return struct.pack(f">BB{count}H", fc, 2 * count, *data)
        if fc == 5:
            address, v = struct.unpack_from(">HH", request, 1)
            if v not in (0, 0xFF00):
                raise _Exc(3)
            self.check_write("coil", address, 1)
            self.mem["coil"][address] = 1 if v else 0
            self.written("coil", address, 1)
            return request[:5]
        if fc == 6:
            address, v = struct.unpack_from(">HH", request, 1)
            self.check_write("holding", address, 1)
            self.mem["holding"][address] = v
            self.written("holding", address, 1)
            return request[:5]
        if fc in (15, 16):
            address, count, nbytes = struct.unpack_from(">HHB", request, 1)
            size = (count + 7) // 8 if fc == 15 else 2 * count
            if not 1 <= count <= _MAX_COUNT[fc] or nbytes != size or len(request) != 6 + nbytes:
                raise _Exc(3)
            if address + count > 65536:
                raise _Exc(2)
            table = "coil" if fc == 15 else "holding"
            self.check_write(table, address, count)
            if fc == 15:
                bits = pdu.unpack_bits(request[6:], count)
                self.mem["coil"][address : address + count] = bytes(bits)
            else:
                regs = struct.unpack_from(f">{count}H", request, 6)
                self.mem["holding"][address : address + count] = array.array("H", regs)
            self.written(table, address, count)
            return request[:5]
        if fc == 22:
            address, and_mask, or_mask = struct.unpack_from(">HHH", request, 1)
            self.check_write("holding", address, 1)
            old = self.mem["holding"][address]
            self.mem["holding"][address] = (old & and_mask) | (or_mask & ~and_mask & 0xFFFF)
            self.written("holding", address, 1)
            return request[:7]
        if fc == 43 and len(request) >= 2 and request[1] == 14:
            return self._identify(request)
        raise _Exc(1)

    def _identify(self, request: bytes) -> bytes:
        """FC 43 / MEI 14: read device identification (basic and regular objects)."""
        code, first = request[2], request[3]
        c = self.cfg
        objects = {0: c.vendor, 1: c.product_code, 2: c.revision, 4: c.product_name}
        if code == 4:
            if first not in objects:
                raise _Exc(2)
            chosen = [first]
        elif code in (1, 2, 3):
            top = 2 if code == 1 else 255
            if first not in objects:
                first = 0
            chosen = [i for i in sorted(objects) if first <= i <= top]
        else:
            raise _Exc(3)
        body = b"".join(
            bytes((i, len(v := objects[i].encode("latin-1", "replace")[:250]))) + v for i in chosen
        )
        return bytes((43, 14, code, 0x82, 0, 0, len(chosen))) + body


class _Exc(Exception):
    def __init__(self, code: int) -> None:
        self.code = code


def raw_pty() -> tuple[int, int]:
    """A pseudo-terminal pair in raw mode (a fresh one is cooked: 0x03 would be ^C),
    master non-blocking; (master, slave)."""
    master, slave = os.openpty()
    tty.setraw(slave)
    os.set_blocking(master, False)
    return master, slave


def relink(target: str, link: str) -> None:
    """Point the symlink `link` at `target` in one step (readers never see it missing)."""
    tmp = link + ".new"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    os.symlink(target, tmp)
    os.replace(tmp, link)


class ModbusSim:
    """Serves simulated devices until stopped (Run/Stop)."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.address: str | None = None  # set once serving: the pty path or host:port
        self.requests = 0
        self._wake_r = self._wake_w = -1  # the wake pipe lives while `run` does
        self._stopped = False
        self._later: list[tuple[float, int, socket.socket, bytes]] = []
        self._seq = 0

    def stop(self, err: BaseException | None = None) -> None:
        """Ask `run` to return; returns at once."""
        self._stopped = True
        if self._wake_w >= 0:
            with contextlib.suppress(OSError):
                os.write(self._wake_w, b"\0")

    def run(self, announce: TextIO | None = None) -> None:
        cfg = self.config
        start = time.monotonic()
        devices = {d.unit: _Device(d, start) for d in cfg.device}
        with contextlib.ExitStack() as stack:
            r, w = os.pipe()
            stack.callback(os.close, r)
            stack.callback(os.close, w)
            stack.callback(setattr, self, "_wake_w", -1)  # runs first: stop() writes no more
            self._wake_r, self._wake_w = r, w
            if cfg.transport in ("rtu", "ascii"):
                self._serve_pty(stack, devices, announce)
            elif cfg.transport == "udp":
                self._serve_udp(stack, devices, announce)
            else:
                self._serve_tcp(stack, devices, announce)

    def _announce(self, address: str, announce: TextIO | None) -> None:
        self.address = address
        if announce is not None:
            announce.write(address + "\n")
            announce.flush()

    def _answer(
        self, devices: dict[int, _Device], unit: int, request: bytes, serial: bool
    ) -> tuple[_Device, bytes] | None:
        """The device that answers and its answer PDU; None: no answer (silence)."""
        if serial and unit == 0:  # a broadcast: every unit applies a write, none answers
            if request[0] in _WRITE_FC:
                now = time.monotonic()
                for dev in devices.values():
                    dev.handle(request, now)
                self.requests += 1
            return None
        dev = devices.get(unit)
        if dev is None and not serial and unit in (0, 255) and devices:
            dev = devices[min(devices)]  # a TCP device is the server addressed itself
        if dev is None:
            return None  # nobody on the bus has this unit: silence
        self.requests += 1
        return dev, dev.handle(request, time.monotonic())

    def _rtu_answer(self, devices: dict[int, _Device], frame: bytes) -> bytes | None:
        got = self._answer(devices, frame[0], frame[1:-2], serial=True)
        if got is None:
            return None
        if self.config.response_delay and self.config.transport in ("rtu", "ascii"):
            time.sleep(self.config.response_delay)  # a serial line: nothing else goes on
        dev, answer = got
        unit = frame[0] if dev.cfg.answer_unit is None else dev.cfg.answer_unit
        out = with_crc(bytes((unit,)) + answer)
        return out + b"\x00" if dev.cfg.trailing_byte else out

    def _serve_pty(
        self, stack: contextlib.ExitStack, devices: dict[int, _Device], announce: TextIO | None
    ) -> None:
        master, slave = raw_pty()
        stack.callback(os.close, master)
        stack.callback(os.close, slave)  # held open: the pty stays usable between drivers
        path = os.ttyname(slave)
        link = self.config.link
        if link:
            relink(path, link)
            stack.callback(lambda: os.path.islink(link) and os.unlink(link))
        poll = select.poll()
        poll.register(master, select.POLLIN)
        poll.register(self._wake_r, select.POLLIN)
        self._announce(path, announce)
        buf = b""
        while not self._stopped:
            poll.poll()
            try:
                buf += os.read(master, 4096)
            except BlockingIOError:
                continue
            except OSError:  # EIO: no one has the pty open right now
                time.sleep(0.01)
                continue
            if self.config.transport == "ascii":
                buf = self._consume_ascii(devices, buf, lambda data: os.write(master, data))
            else:
                buf = self._consume_rtu(devices, buf, lambda data: os.write(master, data))

    def _consume_ascii(self, devices: dict[int, _Device], buf: bytes, send: Any) -> bytes:
        """Answer the whole ASCII frames (':' hex LRC CR LF) in `buf`; the bytes left over.
        A frame that is not hex or fails its LRC gets no answer, as on a real line."""
        while (end := buf.find(b"\n")) >= 0:
            line, buf = buf[:end], buf[end + 1 :]
            start = line.rfind(b":")
            try:
                frame = bytes.fromhex(line[start + 1 :].rstrip(b"\r").decode("ascii"))
            except ValueError:
                continue
            if start < 0 or len(frame) < 3 or sum(frame) & 0xFF:
                continue
            got = self._answer(devices, frame[0], frame[1:-1], serial=True)
            if got is None:
                continue
            if self.config.response_delay:
                time.sleep(self.config.response_delay)
            dev, answer = got
            unit = frame[0] if dev.cfg.answer_unit is None else dev.cfg.answer_unit
            send(ascii_frame(bytes((unit,)) + answer))
        return b"" if len(buf) > 2 * _MAX_ADU + 3 else buf

    def _consume_rtu(self, devices: dict[int, _Device], buf: bytes, send: Any) -> bytes:
        """Answer the whole requests at the start of `buf`; the bytes left over."""
        while (n := pdu.rtu_request_length(buf)) is not None and len(buf) >= n:
            frame, buf = buf[:n], buf[n:]
            if not crc_ok(frame):
                return b""  # out of step: a device waits for the next frame
            answer = self._rtu_answer(devices, frame)
            if answer is not None:
                send(answer)
        return b"" if len(buf) > _MAX_ADU else buf  # noise that never ends a frame

    def _serve_tcp(
        self, stack: contextlib.ExitStack, devices: dict[int, _Device], announce: TextIO | None
    ) -> None:
        cfg = self.config
        listeners: dict[int, socket.socket] = {}
        port = cfg.tcp_port
        for host in [cfg.host, *cfg.hosts]:  # port 0: the first one's free port for all
            s = stack.enter_context(socket.create_server((host, port), reuse_port=False))
            s.setblocking(False)
            port = s.getsockname()[1]
            listeners[s.fileno()] = s
        poll = stack.enter_context(select.epoll())  # 500 connections: no scan of them all
        for fd in listeners:
            poll.register(fd, select.EPOLLIN)
        poll.register(self._wake_r, select.EPOLLIN)
        clients: dict[int, _Client] = {}
        stack.callback(lambda: [c.sock.close() for c in clients.values()])
        self._announce(f"{cfg.host}:{port}", announce)
        self._later: list[tuple[float, int, socket.socket, bytes]] = []  # delayed answers

        def drop(c: _Client) -> None:
            poll.unregister(c.sock.fileno())
            del clients[c.sock.fileno()]
            c.sock.close()

        while not self._stopped:
            wait = -1.0
            if self._later:
                wait = max(0.0, self._later[0][0] - time.monotonic())
            for fd, _ev in poll.poll(wait):
                if fd in listeners:
                    with contextlib.suppress(BlockingIOError):
                        s, _ = listeners[fd].accept()
                        if cfg.one_client and clients:
                            s.close()  # a device that serves one client at a time
                            continue
                        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                        clients[s.fileno()] = _Client(s, time.monotonic())
                        poll.register(s, select.EPOLLIN)
                    continue
                c = clients.get(fd)
                if c is None:
                    continue
                try:
                    data = c.sock.recv(4096)
                except OSError:
                    data = b""
                if not data or time.monotonic() - c.since < cfg.connect_delay:
                    drop(c)  # closed, or asked before the device was ready: it resets
                    continue
                c.buf += data
                try:
                    keep = self._consume_tcp(devices, c)
                except OSError:
                    keep = False
                if not keep:
                    drop(c)
            now = time.monotonic()
            while self._later and self._later[0][0] <= now:
                _t, _n, sock, answer = heapq.heappop(self._later)
                with contextlib.suppress(OSError):  # the client may be gone
                    sock.sendall(answer)

    def _send_answer(self, sock: socket.socket, answer: bytes) -> None:
        """Send an answer now, or after `response_delay` without holding up others."""
        delay = self.config.response_delay
        if not delay:
            sock.sendall(answer)
            return
        self._seq += 1
        heapq.heappush(self._later, (time.monotonic() + delay, self._seq, sock, answer))

    def _consume_tcp(self, devices: dict[int, _Device], c: _Client) -> bool:
        """Answer the whole requests in the client's buffer; False: close the connection."""
        buf = c.buf
        if self.config.transport == "rtu_over_tcp":
            rest = self._consume_rtu(
                devices, bytes(buf), lambda data: self._send_answer(c.sock, data)
            )
            buf[:] = rest
            return True
        while len(buf) >= 6:
            tid, proto, length = struct.unpack_from(">HHH", buf)
            if not 2 <= length <= _MAX_ADU:
                return False  # no PDU can be that long or short: out of step
            if len(buf) < 6 + length:
                return True
            unit = buf[6]
            request = bytes(buf[7 : 6 + length])
            del buf[: 6 + length]
            n = pdu.request_length(request)
            if n is not None and n != len(request):
                return False  # the header disagrees with the request: out of step
            if proto != 0:
                continue
            got = self._answer(devices, unit, request, serial=False)
            if got is None:
                continue
            dev, answer = got
            if dev.cfg.transaction_id_zero:
                tid = 0
            if dev.cfg.answer_unit is not None:
                unit = dev.cfg.answer_unit
            self._send_answer(c.sock, struct.pack(">HHHB", tid, 0, len(answer) + 1, unit) + answer)
        return True

    def _serve_udp(
        self, stack: contextlib.ExitStack, devices: dict[int, _Device], announce: TextIO | None
    ) -> None:
        cfg = self.config
        sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        sock.bind((cfg.host, cfg.tcp_port))
        sock.setblocking(False)
        poll = select.poll()
        poll.register(sock, select.POLLIN)
        poll.register(self._wake_r, select.POLLIN)
        host, port = sock.getsockname()[:2]
        self._announce(f"{host}:{port}", announce)
        while not self._stopped:
            poll.poll()
            try:
                data, peer = sock.recvfrom(1024)
            except (BlockingIOError, OSError):
                continue
            if len(data) < 8:
                continue  # one datagram, one request: a short one is dropped
            tid, proto, length, unit = struct.unpack_from(">HHHB", data)
            request = data[7:]
            n = pdu.request_length(request)
            if proto != 0 or length != len(data) - 6 or (n is not None and n != len(request)):
                continue
            got = self._answer(devices, unit, request, serial=False)
            if got is None:
                continue
            dev, answer = got
            if dev.cfg.transaction_id_zero:
                tid = 0
            if dev.cfg.answer_unit is not None:
                unit = dev.cfg.answer_unit
            if cfg.response_delay:
                time.sleep(cfg.response_delay)
            with contextlib.suppress(OSError):
                sock.sendto(struct.pack(">HHHB", tid, 0, len(answer) + 1, unit) + answer, peer)


class _Client:
    """A TCP connection to the simulator and the bytes of its next request."""

    def __init__(self, sock: socket.socket, since: float) -> None:
        self.sock = sock
        self.since = since
        self.buf = bytearray()


_WRITE_FC = (5, 6, 15, 16, 22)
_MAX_ADU = 260


@contextlib.contextmanager
def sim_process(config_path: str, timeout: float = 20.0) -> Any:
    """Run `edgert sim modbus --config config_path` in its own process for the block.

    Yields `(process, address)`: the address it printed (pty path or host:port).
    """
    import subprocess
    import sys

    with subprocess.Popen(
        [sys.executable, "-m", "edgert", "sim", "modbus", "--config", config_path],
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:  # leaving it closes the pipe
        try:
            assert proc.stdout is not None
            ready, _, _ = select.select([proc.stdout], [], [], timeout)
            line = proc.stdout.readline().strip() if ready else ""
            if not line:
                raise RuntimeError(f"the simulator printed no address within {timeout:g} s")
            yield proc, line
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
