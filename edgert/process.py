"""The link codec under its old name; actor processes live in `edgert.proc`."""

from .proc.child import set_pdeathsig
from .proc.link import decode_link, encode_link

__all__ = ["decode_link", "encode_link", "set_pdeathsig"]
