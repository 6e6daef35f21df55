"""The receiving side of the bus: per-sender sequence, dedupe and cumulative acks.

One `Inbox` lives in the bridge's forwarder (plain data, no I/O). For each
sender epoch it keeps the last `seq` accepted and the last `seq` acked.

- A batch is accepted only when `accepts(last, seq, first)`: it is the next one
  (`seq == last + 1`), or the sender dropped the batches between and counted
  them (`seq == first > last + 1`). Anything <= last is a duplicate (a resend
  after a lost ack), anything else out of order; both are counted, not taken,
  and the sender is acked again, so a lost ack costs a resend, never a
  duplicate, and points stay in order per sender.
- An accepted batch may split into several parts (one per node). Its slot
  counts the parts not yet safe; the sender is acked cumulatively up to its
  last seq of which every earlier one is safe (`Sender.advance`).
- The last seq of each epoch up to which every batch is safe (in NATS or in
  the spool, counting the commit that records it) is also kept in the spool,
  so a bridge that restarts knows which resent batches it already has, and
  takes again every one it does not (`dirty_seqs`).
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from .frames import accepts

__all__ = ["Inbox", "Sender", "Slot"]

KEEP_SENDERS = 1000  # idle sender epochs remembered in memory (the spool keeps their seqs)


class Slot:
    """One accepted bus batch: its seq and how many of its parts are not safe yet."""

    __slots__ = ("seq", "open")

    def __init__(self, seq: int, parts: int) -> None:
        self.seq = seq
        self.open = parts


@dataclass(slots=True, eq=False)
class Sender:
    """One sender epoch: the last seq accepted, the last acked, and the seqs between."""

    ident: bytes
    accepted: int
    acked: int
    open: deque[Slot] = field(default_factory=deque)
    dirty: bool = False  # accepted something not yet recorded in the spool

    def advance(self) -> bool:
        """Move `acked` over every leading seq whose parts are all safe; True if it moved."""
        moved = False
        while self.open and self.open[0].open <= 0:
            self.acked = self.open.popleft().seq
            moved = True
        return moved


class Inbox:
    """Every sender epoch heard from; which batches to take; which acks are owed."""

    def __init__(self, last_seq: Callable[[str], int] = lambda epoch: 0) -> None:
        self.last_seq = last_seq  # what the spool remembers of an epoch not seen yet
        self.senders: dict[str, Sender] = {}
        self.acks_due: set[str] = set()
        self.duplicates = 0
        self.out_of_order = 0

    def expects(self, epoch: str, seq: int, first: int) -> bool:
        """Would `take` accept this batch now? (It changes nothing.)"""
        sender = self.senders.get(epoch)
        last = sender.accepted if sender is not None else self.last_seq(epoch)
        return accepts(last, seq, first)

    def take(self, ident: bytes, epoch: str, seq: int, first: int, parts: int) -> Slot | None:
        """A P frame came: its slot when it is next from its sender (else None, counted,
        and the sender is acked again: it may have lost an ack). A batch taken is acked
        once it is safe (`safe`), not before: an ack that moves nothing costs the
        sender a wake-up."""
        sender = self.senders.get(epoch)
        if sender is None:
            last = self.last_seq(epoch)
            sender = self.senders[epoch] = Sender(ident, last, last)
            if len(self.senders) > KEEP_SENDERS:
                self._forget()
        sender.ident = ident
        if not accepts(sender.accepted, seq, first):
            self.acks_due.add(epoch)
            if seq <= sender.accepted:
                self.duplicates += 1
            else:
                self.out_of_order += 1
            return None
        sender.accepted = seq
        sender.dirty = True
        slot = Slot(seq, parts)
        sender.open.append(slot)
        if parts == 0 and sender.advance():
            self.acks_due.add(epoch)
        return slot

    def safe(self, epoch: str, slot: Slot) -> None:
        """One part of `slot` is in NATS or in the spool."""
        slot.open -= 1
        sender = self.senders.get(epoch)
        if sender is not None and sender.advance():
            self.acks_due.add(epoch)

    def dirty_seqs(self, coming: Counter[Slot] | None = None) -> dict[str, int]:
        """epoch -> seq to record in the spool, for every sender accepted from since
        `recorded()`: its last seq of which every batch, and every earlier one, is safe
        or has all its parts not yet safe in `coming` (slot -> parts in this commit).
        Never the last accepted seq as such: a batch still in memory or in flight is
        not the spool's, and a bridge that restarts must take its resend."""
        out = {}
        for e, s in self.senders.items():
            if not s.dirty:
                continue
            seq = s.acked
            for slot in s.open:
                if slot.open > (coming[slot] if coming else 0):
                    break
                seq = slot.seq
            out[e] = seq
        return out

    def recorded(self, seqs: dict[str, int]) -> None:
        for e, seq in seqs.items():
            s = self.senders.get(e)
            if s is not None and s.accepted == seq:
                s.dirty = False

    def acks(self) -> list[tuple[bytes, str, int]]:
        """(ident, epoch, seq) of every ack owed now; clears them."""
        out = []
        for epoch in self.acks_due:
            s = self.senders.get(epoch)
            if s is not None:
                out.append((s.ident, epoch, s.acked))
        self.acks_due.clear()
        return out

    def _forget(self) -> None:
        for epoch in list(self.senders)[: len(self.senders) - KEEP_SENDERS]:
            s = self.senders[epoch]
            if not s.open and not s.dirty:
                del self.senders[epoch]
