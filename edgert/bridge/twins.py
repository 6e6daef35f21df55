"""Another gateway with this gateway's id on the same NATS system: detect it, say so.

Two gateways with one id answer each other's commands and mix their points on
the same subjects, silently. So each bridge, on every NATS session, subscribes
to `<prefix>.<gateway>.svc.instance` (no queue group: every instance hears it)
and asks there, at the session's start and every `CHECK_EVERY` seconds, with
its own identity (a random instance id, host, pid). Every instance answers with
its own; a request or an answer carrying another instance id is a twin. Both
gateways learn of it at once, the one that asks and the one asked. A twin not
heard of for `FORGET_AFTER` seconds is forgotten (it stopped, or was renamed).

`Twins.note()` is what status shows (the bridge's `duplicate_id`, on the
status subject and in `edgert status`); a twin found or gone is logged once,
as an error, naming the other's host and pid.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import time
from typing import Any

__all__ = ["Twins", "CHECK_EVERY", "FORGET_AFTER"]

CHECK_EVERY = 30.0  # seconds between checks in a session
FORGET_AFTER = 75.0  # a twin not heard of for this long is gone
ANSWER_WINDOW = 0.5  # seconds to collect answers after asking


class Twins:
    """This instance's identity and the other instances with its id; owned by the
    bridge's loop."""

    def __init__(self, gateway: str, base: str, log: Any, changed: Any = None) -> None:
        self.gateway = gateway
        self.subject = f"{base}.svc.instance"
        self.log = log
        self.changed = changed or (lambda: None)
        self.me = {
            "gateway": gateway,
            "instance": os.urandom(8).hex(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
        }
        self.seen: dict[str, tuple[dict[str, Any], float]] = {}  # instance -> (identity, when)

    def note(self) -> str:
        """'' when this gateway is alone with its id, else who else has it."""
        self._forget(time.monotonic())
        return "; ".join(
            f"host {who.get('host', '?')} pid {who.get('pid', '?')}"
            for who, _ in self.seen.values()
        )

    def _heard(self, data: bytes, now: float) -> None:
        try:
            who = json.loads(data)
            instance = who["instance"]
        except (ValueError, TypeError, KeyError):
            return
        if not isinstance(instance, str) or instance == self.me["instance"]:
            return
        new = instance not in self.seen
        self.seen[instance] = (who, now)
        if new:
            self.log.error(
                "ANOTHER GATEWAY WITH ID %r is on this NATS system (host %s, pid %s): "
                "commands reach either one and the points of both mix on the same "
                "subjects; give each gateway its own [gateway] id",
                self.gateway,
                who.get("host", "?"),
                who.get("pid", "?"),
            )
            self.changed()

    def _forget(self, now: float) -> None:
        gone = [i for i, (_, t) in self.seen.items() if now - t > FORGET_AFTER]
        for i in gone:
            who, _ = self.seen.pop(i)
            self.log.warning(
                "the other gateway with id %r (host %s, pid %s) is no longer heard of",
                self.gateway,
                who.get("host", "?"),
                who.get("pid", "?"),
            )
        if gone:
            self.changed()

    async def watch(self, nc: Any) -> None:
        """Answer and ask on the instance subject for one NATS session (until cancelled)."""
        me = json.dumps(self.me).encode()
        requests = await nc.subscribe(self.subject)
        answers = await nc.subscribe(nc.new_inbox())
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._answer(nc, requests, me))
                tg.create_task(self._hear(answers))
                while True:
                    await nc.publish(self.subject, me, reply=answers.subject)
                    await asyncio.sleep(ANSWER_WINDOW)
                    self._forget(time.monotonic())
                    await asyncio.sleep(CHECK_EVERY - ANSWER_WINDOW)
        finally:
            for sub in (requests, answers):
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()

    async def _answer(self, nc: Any, sub: Any, me: bytes) -> None:
        async for msg in sub.messages:
            self._heard(msg.data, time.monotonic())
            if msg.reply:
                await nc.publish(msg.reply, me)

    async def _hear(self, sub: Any) -> None:
        async for msg in sub.messages:
            self._heard(msg.data, time.monotonic())
