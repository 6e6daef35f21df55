"""The bus poller: everything the driver's loop does between two `receive` calls.

A `Poller` owns one bus: its transport, its devices' states and the read plan.
`step()` does at most one exchange, the most overdue block read, so the
driver's loop gets back to its inbox between any two requests; `next_wake()`
says when there is work again; `write(points)` checks a whole command, then
writes it; `close()` releases the port.

A device that does not answer (timeout or CRC error after `retries`) goes
offline: an `online = false` point says so, its values are not resent as if
fresh, and from then on it costs the bus one probe (no retries) every
`probe_interval` until it answers. When the port itself fails (a USB adapter
unplugged, a TCP connection reset) every device goes offline and the port is
re-opened with exponential backoff from `reopen_min` to `reopen_max` seconds,
inside this process: no restart storm, no busy-looping; the exchange the
failure broke is counted against its device (`errors_timeout`, or
`errors_crc` for a stream out of step).

Exceptions 10 and 11 ("gateway path unavailable", "target failed to respond")
mean the device behind a gateway is not answering: offline, as for a timeout.
Exception 6 (busy) is asked again after `busy_retry_wait`, up to
`busy_retries` times. A read the device refuses is logged when it starts and
when its exception changes, and counted every time. When the bus cannot keep
up, of the reads due the one done longest ago goes first, so every device
loses poll slots alike.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any

from edgert import Context, Point

from . import pdu
from .config import ModbusConfig, RegisterConfig
from .errors import (
    BUSY,
    GATEWAY_NO_ANSWER,
    BadFrame,
    DeviceException,
    ModbusError,
    PortError,
    Timeout,
)
from .plan import Block, plan_device
from .registers import Refused, encode, encode_mask
from .report import DeviceState
from .transport import Transport, open_transport

__all__ = ["Poller"]

REPORT_EVERY = 0.5  # seconds between updates of the driver's figures in `edgert status`


class Poller:
    def __init__(self, cfg: ModbusConfig, ctx: Context) -> None:
        self.cfg = cfg
        self.ctx = ctx
        self.log = ctx.log
        now = time.monotonic()
        self.devices = [DeviceState(i, d) for i, d in enumerate(cfg.device)]
        self.by_name = {d.name: d for d in self.devices}
        self.blocks: list[Block] = []
        for dev in self.devices:
            self.blocks += plan_device(dev.index, dev.cfg, cfg.poll_interval, now)
        self.transport: Transport | None = None
        self.reopen_at = now
        self._backoff = cfg.reopen_min
        self._healthy = False  # an exchange succeeded since the port was opened
        self._port_error = ""
        self._hung_up = False  # the port was closed on purpose: re-open it quietly
        self.stats = {"requests": 0, "opens": 0, "open_failures": 0, "port_errors": 0}
        self._report_at = 0.0

    # -- the loop's two questions ---------------------------------------------------
    def next_wake(self) -> float:
        """Monotonic time when `step` has work next."""
        if self.transport is None:
            return min(self.reopen_at, self._report_at)
        block, when = self._next_block()
        when = when if block is not None else time.monotonic() + 3600.0
        return min(when, self._report_at)  # figures stay fresh when nothing is due

    def step(self) -> None:
        """Open the port if it is time, or do the most overdue block read."""
        now = time.monotonic()
        if self.transport is None:
            if now >= self.reopen_at:
                self._open(now)
        else:
            block, when = self._next_block()
            if block is not None and when <= now:
                self._poll(block, now)
        if now >= self._report_at:
            self._report(now)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None

    # -- polling ----------------------------------------------------------------------
    def _next_block(self) -> tuple[Block | None, float]:
        """The block to read next and when. Of the blocks already due, the one read
        longest ago goes first, so an overloaded bus skips every block's slots alike."""
        best: Block | None = None
        best_key = (True, 0.0)
        best_t = 0.0
        devices = self.devices
        now = time.monotonic()
        for b in self.blocks:
            dev = devices[b.device]
            t = b.next_at
            if dev.ready_at > t:
                t = dev.ready_at
            if dev.online is False and dev.next_probe > t:
                t = dev.next_probe
            key = (False, b.read_at) if t <= now else (True, t)
            if best is None or key < best_key:
                best, best_key, best_t = b, key, t
        return best, best_t

    def _poll(self, block: Block, now: float) -> None:
        dev = self.devices[block.device]
        probing = dev.online is False
        out: list[Point] = []
        block.read_at = now
        try:
            items = self._exchange(dev, block.request, 1 if probing else 1 + self.cfg.retries)
        except DeviceException as e:
            if e.code in GATEWAY_NO_ANSWER:
                self._not_answering(dev, e)
            else:
                dev.set_online(True)
                self._refused_read(block, dev, e)
            items = None
        except (Timeout, BadFrame) as e:
            self._not_answering(dev, e)
            items = None
        except PortError as e:
            self._lost(e)
            return
        finally:
            block.advance(now)
        t_ns = time.time_ns()
        if items is not None:
            if block.refused is not None:
                self.log.info("device %r: %s read again", dev.name, _names(block))
                block.refused = None
            if dev.online is False:
                self.log.info("device %r (unit %d) answers again", dev.name, dev.cfg.unit)
            dev.set_online(True)
            t_mono = time.monotonic()
            for reg, value in block.values(items):
                f = dev.filters[reg.name]
                if f.wants(value, t_mono):
                    f.sent(value, t_mono)
                    out.append(Point(dev.name, reg.name, "0", value, t_ns))
        out += dev.status_points(t_ns)
        if out:
            self.ctx.publish(out)
        if dev.cfg.close_connection_after_poll:
            now = time.monotonic()
            if not any(b.device == dev.index and b.next_at <= now for b in self.blocks):
                self._hang_up(now)

    def _hang_up(self, now: float) -> None:
        """Close the connection on purpose (a device that serves one client at a time):
        it is opened again when next needed, with no backoff."""
        self.close()
        self.reopen_at = now
        self._hung_up = True

    def _not_answering(self, dev: DeviceState, e: ModbusError) -> None:
        if dev.online is not False:
            self.log.warning("device %r (unit %d) not answering: %s", dev.name, dev.cfg.unit, e)
        dev.set_online(False)
        dev.next_probe = time.monotonic() + dev.cfg.probe_interval

    def _exchange(self, dev: DeviceState, request: bytes, attempts: int) -> Any:
        """One request to `dev` with up to `attempts` tries (and `busy_retries` more
        after a busy answer); counts every failed try, a broken connection included."""
        assert self.transport is not None
        cfg = dev.cfg
        wait = dev.ready_at - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        busy = cfg.busy_retries
        try:
            attempt = 0
            while True:
                attempt += 1
                self.stats["requests"] += 1
                try:
                    result = self.transport.exchange(
                        cfg.unit, request, self.cfg.timeout, cfg.tolerant_transaction_ids
                    )
                except Timeout:
                    dev.errors["timeout"] += 1
                    if attempt >= attempts:
                        raise
                except BadFrame:
                    dev.errors["crc"] += 1
                    if attempt >= attempts:
                        raise
                except PortError as e:
                    dev.errors[e.count] += 1
                    raise
                except DeviceException as e:
                    if e.code == BUSY and busy > 0:  # expected of it: not an error
                        busy -= 1
                        attempt -= 1
                        time.sleep(cfg.busy_retry_wait)
                        continue
                    dev.errors["exception"] += 1
                    if e.code not in GATEWAY_NO_ANSWER or attempt >= attempts:
                        raise
                else:
                    if not self._healthy:
                        self._healthy = True
                        self._backoff = self.cfg.reopen_min
                    return result
        finally:
            if dev.cfg.pause_between_requests:
                dev.ready_at = time.monotonic() + dev.cfg.pause_between_requests

    def _refused_read(self, block: Block, dev: DeviceState, e: DeviceException) -> None:
        names = _names(block)
        if e.code == 2 and len(parts := block.split()) > 1:
            self.log.warning(
                "device %r refused a merged read of %s %d..%d (%s): reading it in %d parts",
                dev.name, block.table, block.start, block.start + block.count - 1, e, len(parts),
            )  # fmt: skip
            i = self.blocks.index(block)
            self.blocks[i : i + 1] = parts
            for p in parts:
                p.due = time.monotonic()
            return
        # the first refusal and each change are logged; the rest are only counted
        level = logging.WARNING if block.refused != e.code else logging.DEBUG
        block.refused = e.code
        self.log.log(
            level, "device %r: reading %s (%s) failed: %s", dev.name, names, block.table, e
        )

    # -- the port ---------------------------------------------------------------------
    def _open(self, now: float) -> None:
        try:
            self.transport = open_transport(self.cfg)
        except PortError as e:
            msg = str(e)
            level = logging.WARNING if msg != self._port_error else logging.DEBUG
            self.log.log(level, "cannot open the bus: %s (next try in %.1f s)", msg, self._backoff)
            self._port_error = msg
            self.stats["open_failures"] += 1
            self._schedule_reopen(now)
            return
        self.log.log(
            logging.DEBUG if self._hung_up else logging.INFO, "bus open: %s", self.transport.where
        )
        self._hung_up = False
        self._port_error = ""
        self._healthy = False
        self.stats["opens"] += 1
        for dev in self.devices:  # devices that need a moment after a connection opens
            if dev.cfg.pause_after_connect:
                dev.ready_at = max(dev.ready_at, time.monotonic() + dev.cfg.pause_after_connect)

    def _schedule_reopen(self, now: float) -> None:
        self.reopen_at = now + self._backoff * random.uniform(0.8, 1.2)
        self._backoff = min(self._backoff * 2, self.cfg.reopen_max)

    def _lost(self, e: ModbusError) -> None:
        self.log.warning("bus lost: %s; re-opening with backoff", e)
        self._port_error = str(e)
        self.stats["port_errors"] += 1
        self.close()
        t_ns = time.time_ns()
        out: list[Point] = []
        for dev in self.devices:
            dev.set_online(False)
            out += dev.status_points(t_ns)  # what changed: `online`, a counter
        if out:
            self.ctx.publish(out)
        self._schedule_reopen(time.monotonic())

    def _report(self, now: float) -> None:
        self._report_at = now + REPORT_EVERY
        self.ctx.report(
            port="open" if self.transport is not None else "closed",
            port_error=self._port_error,
            devices_online=sum(1 for d in self.devices if d.online),
            skipped=sum(b.skipped for b in self.blocks),
            errors=sum(sum(d.errors.values()) for d in self.devices),
            **self.stats,
        )

    # -- writes -----------------------------------------------------------------------
    def write(self, points: list[Point]) -> str | None:
        """Check every point of a command, then write them; None when all were written."""
        todo: list[tuple[DeviceState, RegisterConfig, Any]] = []
        for p in points:
            dev = self.by_name.get(p.node)
            if dev is None:
                return f"no device {p.node!r} on this bus"
            reg = dev.registers.get(p.type)
            if reg is None or p.key != "0":
                return f"device {p.node!r} has no register {p.type!r} (key {p.key!r})"
            if not reg.writable:
                return f"register {p.type!r} of device {p.node!r} is not writable"
            try:
                data = encode_mask(reg, p.value) if reg.masked else encode(reg, p.value)
                todo.append((dev, reg, data))
            except Refused as e:
                return f"device {p.node!r}: {e}"
        if self.transport is None and self._hung_up:  # closed between polls on purpose
            self._open(time.monotonic())
        if self.transport is None:
            return f"the bus is not open ({self._port_error or 'opening'}); nothing written"
        for dev, regs, request in _write_requests(todo):
            names = ", ".join(repr(r.name) for r in regs)
            try:
                self._exchange(dev, request, 1 + self.cfg.retries)
            except PortError as e:
                self._lost(e)
                return f"device {dev.name!r}: writing {names} failed: {e}"
            except ModbusError as e:
                return f"device {dev.name!r}: writing {names} failed: {e}"
            now = time.monotonic()
            if dev.cfg.close_connection_after_poll:
                self._hang_up(now)
            for b in self.blocks:  # read back at once
                if b.device == dev.index and any(r in b.registers for r in regs):
                    b.extra = now
        return None


def _names(block: Block) -> str:
    return ", ".join(r.name for r in block.registers)


def _write_requests(
    todo: list[tuple[DeviceState, RegisterConfig, Any]],
) -> list[tuple[DeviceState, list[RegisterConfig], bytes]]:
    """The requests for a checked command: consecutive coils or registers of one
    device written together (FC 15, 16), a lone coil or register alone (FC 5, 6),
    a bit or a byte of a register each on its own (FC 22)."""
    runs: list[tuple[DeviceState, list[RegisterConfig], list[Any]]] = []
    masked = []
    for dev, reg, data in todo:
        if reg.masked:
            address = reg.address - dev.cfg.base(reg.table)
            masked.append((dev, [reg], pdu.mask_write(address, *data)))
            continue
        items = [data] if isinstance(data, bool) else list(data)
        if runs:
            d, regs, acc = runs[-1]
            last = regs[-1]
            limit = pdu.MAX_WRITE[15 if reg.table == "coil" else 16]
            if (
                d is dev
                and last.table == reg.table
                and last.address + last.size == reg.address
                and len(acc) + len(items) <= limit
            ):
                regs.append(reg)
                acc += items
                continue
        runs.append((dev, [reg], items))
    out = []
    for dev, regs, acc in runs:
        start = regs[0].address - dev.cfg.base(regs[0].table)
        if regs[0].table == "coil":
            req = pdu.write_coil(start, acc[0]) if len(acc) == 1 else pdu.write_coils(start, acc)
        else:
            req = (
                pdu.write_register(start, acc[0])
                if len(acc) == 1
                else pdu.write_registers(start, acc)
            )
        out.append((dev, regs, req))
    return out + masked
