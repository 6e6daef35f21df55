"""Actor processes: an owned zygote that forks them, the child's main, the handle.

`zygote` starts and talks to the preloading fork server, `child` is the main of
every actor process (and of a plain program child until it execs), `handle` is
the supervisor's view of one process, `link` the message pipe between them and
`spec` what a child is asked to run.
"""

from .handle import ActorProcess, reap_group
from .link import Link, decode_link, encode_link
from .spec import ActorSpec, Build, ProgramSpec
from .zygote import Zygote, ZygoteError

__all__ = [
    "ActorProcess",
    "ActorSpec",
    "Build",
    "Link",
    "ProgramSpec",
    "Zygote",
    "ZygoteError",
    "decode_link",
    "encode_link",
    "reap_group",
]
