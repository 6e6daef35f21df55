"""An asyncio actor's `areceive` and the bus: a frame that comes while it waits wakes
it, even when another task of its loop sent on the bus meanwhile (a ZeroMQ send may
take in the notice of a new frame without the socket's FD showing it)."""

from __future__ import annotations

import asyncio
import select
import time

import zmq

from edgert.actor import Actor
from edgert.bus import Outbox, decode_frame, encode_frame
from edgert.bus.outbox import Command
from edgert.context import Context


class Idle(Actor):
    def run(self, ctx: Context) -> None:  # never run: the test drives the Context
        pass


def test_a_command_that_came_while_another_task_replied_wakes_areceive(pair) -> None:
    router, dealer = pair
    box = Outbox(dealer, "drv.1.a")
    ctx = Context(Idle(), name="drv", outbox=box)  # no link, nothing to send: no deadline

    async def main() -> object:
        ctx.reply(Command(6, []))  # the bridge knows the driver once a frame came from it
        assert router.poll(5000)
        router.recv_multipart()
        waiter = asyncio.create_task(ctx.areceive())
        while ctx._atimeout is None:  # until it waits on the bus's FD
            await asyncio.sleep(0)
        router.send_multipart([b"drv", encode_frame("C", 8, [])])
        # the command's notice is on the socket's FD: wait for it without asking the
        # socket (asking would take it in), then reply to an earlier command, as
        # another task of the actor's loop may, before the loop looks at the FD
        fd = dealer.getsockopt(zmq.FD)
        look = select.poll()
        look.register(fd, select.POLLIN)
        assert look.poll(5000), "the command's notice never came"
        time.sleep(0.02)  # that task's work: ZeroMQ takes in notices at a send only
        ctx.reply(Command(7, []))  # when its last look is over ~1 ms (3M cycles) old
        _, frame = router.recv_multipart()
        assert decode_frame(frame)[:2] == ("R", 7)
        return await asyncio.wait_for(waiter, 5)

    try:
        msg = asyncio.run(main())
        assert isinstance(msg, Command) and msg.id == 8
    finally:
        ctx._close()
