"""An independent Modbus server (pymodbus) in its own process, to test drivers against.

`pymodbus_peer(transport, units, link)` starts it and yields a `Peer`:
`transport` is "rtu" or "ascii" (on a pseudo-terminal; the driver opens
`peer.port`, a symlink the way udev names a USB adapter), "tcp",
"rtu_over_tcp", "udp" or "rtu_over_udp" (on 127.0.0.1:`peer.tcp_port`). Every unit has coils, discrete inputs, input and
holding registers 0..`size`-1. The test reads and sets the peer's datastore
(`get`, `set`) and counts the requests it received (`requests`), over a pipe.

On "rtu" and "ascii" a relay sits between the driver's pty and the server's
(copying ASCII bytes as they come), and on "rtu" injects faults on demand
(`fault`): drop requests for some units (a silent device),
corrupt every Nth answer (a CRC error), delay answers; `unplug()` closes the
driver's pty and removes the symlink (a USB adapter pulled out), `plug()`
creates a new one (put back in). pymodbus is imported only in the child.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import socket
import tempfile
from collections.abc import Iterator
from typing import Any

from edgert_drivers.modbus.pdu import READ_FC
from edgert_drivers.modbus.sim import raw_pty, relink

__all__ = ["Peer", "pymodbus_peer"]


class PeerError(Exception):
    """The peer process failed or answered with an error."""


class Peer:
    """The test's handle on a running peer process."""

    def __init__(self, proc: Any, conn: Any, port: str, tcp_port: int) -> None:
        self.proc = proc
        self.conn = conn
        self.port = port
        self.tcp_port = tcp_port

    def _call(self, *msg: Any, timeout: float = 10.0) -> Any:
        self.conn.send(msg)
        if not self.conn.poll(timeout):
            raise PeerError(f"peer did not answer {msg[0]!r} within {timeout:g} s")
        ok, value = self.conn.recv()
        if not ok:
            raise PeerError(value)
        return value

    def get(self, unit: int, table: str, address: int, count: int = 1) -> list[Any]:
        """Values in the peer's datastore (ints for registers, bools for bits)."""
        return self._call("get", unit, table, address, count)

    def set(self, unit: int, table: str, address: int, values: list[Any]) -> None:
        self._call("set", unit, table, address, list(values))

    def requests(
        self, unit: int | None = None, fc: int | None = None, address: int | None = None
    ) -> int:
        """Requests the server received (decoded), filtered by unit, function code, address."""
        counts: list[tuple[int, int, int, int, int]] = self._call("counts")
        return sum(
            n
            for u, f, a, _c, n in counts
            if (unit is None or u == unit)
            and (fc is None or f == fc)
            and (address is None or a == address)
        )

    def request_log(self) -> list[tuple[int, int, int, int, int]]:
        """(unit, fc, address, count, times) of every kind of request received."""
        return [tuple(x) for x in self._call("counts")]

    def reset_requests(self) -> None:
        self._call("reset")

    def fault(
        self,
        drop_units: list[int] | None = None,
        corrupt_every: int = 0,
        delay: float = 0.0,
    ) -> None:
        """Relay faults ("rtu" only); call with no arguments to clear them."""
        self._call("fault", list(drop_units or []), corrupt_every, delay)

    def unplug(self) -> None:
        self._call("unplug")

    def plug(self) -> None:
        self._call("plug")


@contextlib.contextmanager
def pymodbus_peer(
    transport: str = "rtu", units: tuple[int, ...] = (1,), link: str | None = None, size: int = 2000
) -> Iterator[Peer]:
    """A running pymodbus server for the block (see the module's doc)."""
    tmp = None
    serial = transport in ("rtu", "ascii")
    if serial and link is None:
        tmp = tempfile.mkdtemp(prefix="peer-")
        link = os.path.join(tmp, "ttyUSB0")
    tcp_port = 0
    if not serial:
        udp = transport in ("udp", "rtu_over_udp")
        with socket.socket(type=socket.SOCK_DGRAM if udp else socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            tcp_port = s.getsockname()[1]
    mp = multiprocessing.get_context("spawn")
    ours, theirs = mp.Pipe()
    proc = mp.Process(
        target=_child, args=(theirs, transport, units, link, tcp_port, size), daemon=True
    )
    proc.start()
    theirs.close()
    try:
        if not ours.poll(30):
            raise PeerError("peer did not start within 30 s")
        ok, info = ours.recv()
        if not ok:
            raise PeerError(info)
        yield Peer(proc, ours, link or "", tcp_port)
    finally:
        with contextlib.suppress(OSError, EOFError, BrokenPipeError):
            ours.send(("stop",))
        proc.join(5)
        if proc.is_alive():
            proc.kill()
            proc.join(5)
        ours.close()
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(tmp, "ttyUSB0"))
            with contextlib.suppress(OSError):
                os.rmdir(tmp)


# --- the child process ------------------------------------------------------------


def _child(
    conn: Any, transport: str, units: tuple[int, ...], link: str | None, tcp_port: int, size: int
) -> None:
    import asyncio
    import logging

    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    try:
        asyncio.run(_serve(conn, transport, units, link, tcp_port, size))
    except BaseException as e:  # noqa: BLE001 - reported to the parent
        with contextlib.suppress(OSError):
            conn.send((False, f"peer failed: {e!r}"))


class _Relay:
    """Copies RTU frames between the driver's pty and the server's, with faults."""

    def __init__(self, loop: Any, server_master: int, link: str, raw: bool = False) -> None:
        self.loop = loop
        self.raw = raw  # copy bytes as they come (ASCII frames), no RTU framing
        self.server = server_master
        self.link = link
        self.drop_units: set[int] = set()
        self.corrupt_every = 0
        self.delay = 0.0
        self.answers = 0
        self.buf = b""
        self.master = -1
        self.slave = -1
        loop.add_reader(server_master, self.from_server)
        self.plug()

    def plug(self) -> None:
        if self.master >= 0:
            return
        self.master, self.slave = raw_pty()
        relink(os.ttyname(self.slave), self.link)
        self.buf = b""
        self.loop.add_reader(self.master, self.from_driver)

    def unplug(self) -> None:
        if self.master < 0:
            return
        self.loop.remove_reader(self.master)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.link)
        os.close(self.master)
        os.close(self.slave)
        self.master = self.slave = -1

    def from_driver(self) -> None:
        from edgert_drivers.modbus.crc import crc_ok
        from edgert_drivers.modbus.pdu import rtu_request_length

        try:
            data = os.read(self.master, 4096)
        except (BlockingIOError, OSError):
            return
        if self.raw:
            os.write(self.server, data)
            return
        self.buf += data
        while (n := rtu_request_length(self.buf)) is not None and len(self.buf) >= n:
            frame, self.buf = self.buf[:n], self.buf[n:]
            if not crc_ok(frame):
                self.buf = b""  # out of step: start over with the next request
                return
            if frame[0] not in self.drop_units:
                os.write(self.server, frame)

    def from_server(self) -> None:
        try:
            data = os.read(self.server, 4096)
        except (BlockingIOError, OSError):
            return
        self.answers += 1
        if self.corrupt_every and self.answers % self.corrupt_every == 0:
            data = data[:-1] + bytes((data[-1] ^ 0x5A,))
        if self.delay:
            self.loop.call_later(self.delay, self._to_driver, data)
        else:
            self._to_driver(data)

    def _to_driver(self, data: bytes) -> None:
        if self.master >= 0:
            with contextlib.suppress(OSError):
                os.write(self.master, data)


async def _serve(
    conn: Any, transport: str, units: tuple[int, ...], link: str | None, tcp_port: int, size: int
) -> None:
    import asyncio

    from pymodbus import FramerType
    from pymodbus.server import ModbusSerialServer, ModbusTcpServer, ModbusUdpServer
    from pymodbus.simulator import DataType, SimData, SimDevice

    def device(unit: int) -> Any:
        def bits() -> list[Any]:
            return [SimData(0, count=size, values=False, datatype=DataType.BITS)]

        def regs() -> list[Any]:
            return [SimData(0, count=size, values=0, datatype=DataType.REGISTERS)]

        # (coils, discrete inputs, holding, input), each bit addressed on its own
        return SimDevice(id=unit, use_bit_addressing=True, simdata=(bits(), bits(), regs(), regs()))

    counts: dict[tuple[int, int, int, int], int] = {}

    def trace(sending: bool, p: Any) -> Any:
        if not sending:
            key = (p.dev_id, p.function_code, getattr(p, "address", 0), getattr(p, "count", 0))
            counts[key] = counts.get(key, 0) + 1
        return p

    loop = asyncio.get_running_loop()
    devices = [device(u) for u in units]
    relay = None
    connected = asyncio.Event()
    serial = transport in ("rtu", "ascii")
    if serial:
        assert link is not None
        server_master, server_slave = raw_pty()
        server = ModbusSerialServer(
            devices,
            framer=FramerType.RTU if transport == "rtu" else FramerType.ASCII,
            port=os.ttyname(server_slave),
            baudrate=115200,
            parity="N",
            trace_pdu=trace,
            trace_connect=lambda up: connected.set() if up else None,
        )
        relay = _Relay(loop, server_master, link, raw=transport == "ascii")
    else:
        framer = FramerType.SOCKET if transport in ("tcp", "udp") else FramerType.RTU
        kind = ModbusUdpServer if transport in ("udp", "rtu_over_udp") else ModbusTcpServer
        server = kind(devices, framer=framer, address=("127.0.0.1", tcp_port), trace_pdu=trace)
    task = asyncio.create_task(server.serve_forever())
    if serial:
        await asyncio.wait_for(connected.wait(), 20)
    elif transport in ("udp", "rtu_over_udp"):
        for _ in range(400):  # up once its port is taken
            with socket.socket(type=socket.SOCK_DGRAM) as probe:
                try:
                    probe.bind(("127.0.0.1", tcp_port))
                except OSError:
                    break
            await asyncio.sleep(0.025)
    else:
        for _ in range(400):
            try:
                _r, w = await asyncio.open_connection("127.0.0.1", tcp_port)
                w.close()
                break
            except OSError:
                await asyncio.sleep(0.025)
    core = server.context
    stop = asyncio.Event()

    async def handle(msg: tuple[Any, ...]) -> Any:
        kind = msg[0]
        if kind == "get":
            _, unit, table, address, count = msg
            r = await core.devices[unit].async_getValues(READ_FC[table], address, count)
            if not isinstance(r, list):
                raise PeerError(f"get {table} {address}+{count}: {r!r}")
            return [bool(x) for x in r] if table in ("coil", "discrete") else [int(x) for x in r]
        if kind == "set":
            _, unit, table, address, values = msg
            r = await core.devices[unit].async_setValues(READ_FC[table], address, values)
            if r is not None:
                raise PeerError(f"set {table} {address}: {r!r}")
            return None
        if kind == "counts":
            return [(*k, n) for k, n in counts.items()]
        if kind == "reset":
            counts.clear()
            return None
        if kind in ("fault", "unplug", "plug"):
            if relay is None:
                raise PeerError(f"{kind!r} needs transport 'rtu'")
            if kind == "fault":
                relay.drop_units = set(msg[1])
                relay.corrupt_every = msg[2]
                relay.delay = msg[3]
            else:
                getattr(relay, kind)()
            return None
        if kind == "stop":
            stop.set()
            return None
        raise PeerError(f"unknown request {kind!r}")

    async def answer(msg: tuple[Any, ...]) -> None:
        try:
            reply = (True, await handle(msg))
        except Exception as e:  # noqa: BLE001 - the test sees it
            reply = (False, f"{e}")
        if msg[0] != "stop":
            conn.send(reply)

    def readable() -> None:
        try:
            while conn.poll():
                loop.create_task(answer(conn.recv()))
        except (EOFError, OSError):
            stop.set()

    loop.add_reader(conn.fileno(), readable)
    conn.send((True, "ready"))
    await stop.wait()
    loop.remove_reader(conn.fileno())
    if relay is not None:
        relay.unplug()
    await server.shutdown()
    task.cancel()
