"""Simulated Modbus devices: register maps served on a pseudo-terminal (RTU) or TCP.

`ModbusSim(config).run(announce)` creates a pseudo-terminal pair (or listens
on TCP), writes the address a driver should use (the pty's path, optionally
also a symlink `link`; or host:port) as one line to `announce`, and serves
until `stop()`. Each `[[device]]` is a unit id; a request for any other unit
gets no answer at all, as on a real bus. Registers take the driver's register
keys (table, address, type, word_order, byte_order, scale, offset, count, bit)
plus how their value moves: `shape = "constant"` (`value`), `"counter"`
(`value`, then `+ step` every `period` seconds) or `"sine"` (between `min` and
`max` over `period`). Writes (FC 5, 6, 15, 16) land in the device's memory; a
register written to keeps the written value. With `strict = true` a read of an
address no register covers is answered with exception 2, as many devices do.
Requests are framed by their exact length, with no wait for silence; answers
go out after `response_delay` seconds.
"""

from __future__ import annotations

import array
import contextlib
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
from edgert_drivers.modbus.registers import encode

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


@dataclass
class SimConfig:
    transport: Literal["rtu", "tcp", "rtu_over_tcp"] = "rtu"
    link: str | None = None  # rtu: also make this symlink to the pty
    host: str = "127.0.0.1"
    tcp_port: int = field(default=5020, metadata={"min": 0, "max": 65535})  # 0: any free port
    response_delay: float = field(default=0.0, metadata={"min": 0, "max": 10})
    device: list[SimDevice] = field(default_factory=list)

    def check(self) -> None:
        units = [d.unit for d in self.device]
        if len(set(units)) != len(units):
            raise Invalid("device", "two devices with the same unit")


class _Reg:
    """A register's encoder and generator."""

    def __init__(self, cfg: SimRegister, start: float) -> None:
        self.cfg = cfg
        self.codec = cfg.codec()
        self.start = start
        self.held = False
        self.lo = cfg.address
        self.hi = cfg.address + self.codec.size

    def value(self, now: float) -> Any:
        c = self.cfg
        if c.shape == "counter":
            return c.value + c.step * int((now - self.start) / c.period)
        if c.shape == "sine":
            phase = 2 * math.pi * ((now - self.start) % c.period) / c.period
            return c.min + (c.max - c.min) * (0.5 + 0.5 * math.sin(phase))
        return c.value


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
        for r in cfg.register:
            reg = _Reg(r, start)
            self.regs[r.table].append(reg)
            self._store(reg, reg.value(start))
        self.dynamic = {
            t: [r for r in rs if r.cfg.shape != "constant"] for t, rs in self.regs.items()
        }

    def _store(self, reg: _Reg, value: Any) -> None:
        c = reg.codec
        mem = self.mem[c.table]
        if c.bits:
            mem[c.address] = 1 if value else 0
        elif c.bit is not None:
            mask = 1 << c.bit
            if c.byte_order == "little":
                mask = ((mask & 0xFF) << 8) | (mask >> 8)
            mem[c.address] = (mem[c.address] | mask) if value else (mem[c.address] & ~mask)
        else:
            words = encode(c, value)
            mem[c.address : c.address + len(words)] = array.array("H", words)  # type: ignore[arg-type]

    def read(self, table: str, address: int, count: int, now: float) -> list[int] | bytes:
        end = address + count
        if self.cfg.strict and any(
            not any(r.lo <= a < r.hi for r in self.regs[table]) for a in range(address, end)
        ):
            raise _Exc(2)
        for r in self.dynamic[table]:
            if not r.held and r.lo < end and r.hi > address:
                self._store(r, r.value(now))
        return self.mem[table][address:end]  # type: ignore[return-value]

    def written(self, table: str, address: int, count: int) -> None:
        for r in self.regs[table]:
            if r.lo < address + count and r.hi > address:
                r.held = True

    def handle(self, request: bytes, now: float) -> bytes:
        """The answer PDU to a request PDU (an exception answer when it is refused)."""
        fc = request[0]
        try:
            return self._handle(fc, request, now)
        except _Exc as e:
            return bytes((fc | 0x80, e.code))
        except (struct.error, IndexError):
            return bytes((fc | 0x80, 3))

    def _handle(self, fc: int, request: bytes, now: float) -> bytes:
        if fc in (1, 2, 3, 4):
            address, count = struct.unpack_from(">HH", request, 1)
            if not 1 <= count <= pdu.MAX_READ[fc]:
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
            self.mem["coil"][address] = 1 if v else 0
            self.written("coil", address, 1)
            return request[:5]
        if fc == 6:
            address, v = struct.unpack_from(">HH", request, 1)
            self.mem["holding"][address] = v
            self.written("holding", address, 1)
            return request[:5]
        if fc in (15, 16):
            address, count, nbytes = struct.unpack_from(">HHB", request, 1)
            if address + count > 65536 or len(request) != 6 + nbytes:
                raise _Exc(3)
            if fc == 15:
                bits = pdu.unpack_bits(request[6:], count)
                self.mem["coil"][address : address + count] = bytes(bits)
                self.written("coil", address, count)
            else:
                regs = struct.unpack_from(f">{count}H", request, 6)
                self.mem["holding"][address : address + count] = array.array("H", regs)
                self.written("holding", address, count)
            return request[:5]
        raise _Exc(1)


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
            if cfg.transport == "rtu":
                self._serve_pty(stack, devices, announce)
            else:
                self._serve_tcp(stack, devices, announce)

    def _announce(self, address: str, announce: TextIO | None) -> None:
        self.address = address
        if announce is not None:
            announce.write(address + "\n")
            announce.flush()

    def _answer(self, devices: dict[int, _Device], unit: int, request: bytes) -> bytes | None:
        dev = devices.get(unit)
        if dev is None:
            return None  # nobody on the bus has this unit: silence
        self.requests += 1
        answer = dev.handle(request, time.monotonic())
        if self.config.response_delay:
            time.sleep(self.config.response_delay)
        return answer

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
            while (n := pdu.rtu_request_length(buf)) is not None and len(buf) >= n:
                frame, buf = buf[:n], buf[n:]
                if not crc_ok(frame):
                    buf = b""  # out of step: a device waits for the next frame
                    break
                answer = self._answer(devices, frame[0], frame[1:-2])
                if answer is not None:
                    os.write(master, with_crc(frame[:1] + answer))

    def _serve_tcp(
        self, stack: contextlib.ExitStack, devices: dict[int, _Device], announce: TextIO | None
    ) -> None:
        cfg = self.config
        listener = stack.enter_context(
            socket.create_server((cfg.host, cfg.tcp_port), reuse_port=False)
        )
        listener.setblocking(False)
        poll = select.poll()
        poll.register(listener, select.POLLIN)
        poll.register(self._wake_r, select.POLLIN)
        clients: dict[int, tuple[socket.socket, bytearray]] = {}
        stack.callback(lambda: [s.close() for s, _ in clients.values()])
        host, port = listener.getsockname()[:2]
        self._announce(f"{host}:{port}", announce)
        while not self._stopped:
            for fd, _ev in poll.poll():
                if fd == listener.fileno():
                    with contextlib.suppress(BlockingIOError):
                        s, _ = listener.accept()
                        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                        clients[s.fileno()] = (s, bytearray())
                        poll.register(s, select.POLLIN)
                    continue
                if fd not in clients:
                    continue
                s, buf = clients[fd]
                try:
                    data = s.recv(4096)
                except OSError:
                    data = b""
                if not data:
                    poll.unregister(fd)
                    del clients[fd]
                    s.close()
                    continue
                buf += data
                with contextlib.suppress(OSError):
                    self._consume_tcp(devices, s, buf)

    def _consume_tcp(self, devices: dict[int, _Device], s: socket.socket, buf: bytearray) -> None:
        if self.config.transport == "rtu_over_tcp":
            while (n := pdu.rtu_request_length(buf)) is not None and len(buf) >= n:
                frame = bytes(buf[:n])
                del buf[:n]
                if not crc_ok(frame):
                    buf.clear()
                    return
                answer = self._answer(devices, frame[0], frame[1:-2])
                if answer is not None:
                    s.sendall(with_crc(frame[:1] + answer))
            return
        while len(buf) >= 7:
            tid, proto, length, unit = struct.unpack_from(">HHHB", buf)
            if len(buf) < 6 + length:
                return
            request = bytes(buf[7 : 6 + length])
            del buf[: 6 + length]
            answer = self._answer(devices, unit, request) if proto == 0 else None
            if answer is not None:
                s.sendall(struct.pack(">HHHB", tid, 0, len(answer) + 1, unit) + answer)


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
