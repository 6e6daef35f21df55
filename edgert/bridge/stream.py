"""The gateway's JetStream stream: found or created, and checked before any publish.

`ensure_stream` runs at the start of every NATS session when `jetstream = true`.
The stream is `[nats] stream`, by default `EDGERT_<gateway id>` (one stream per
gateway, so a fleet can share one server). A stream that exists is used as it
is (its limits are the operator's), but only if its subjects cover the
gateway's point subjects; otherwise `StreamError` says which stream and
which subjects, and the uplink reports it instead of publishing into nothing.
No answer at all from the JetStream API (JetStream off on the server, or a
wrong `jetstream_domain`) is a `StreamError` too.
A missing stream is created for the points and the status subject with the
`stream_max_bytes` and `stream_max_age` limits (oldest messages go first).

With the default name, a stream that already takes the gateway's subjects
under another name (such as `EDGERT`, the default of earlier versions) is used
rather than refused: JetStream allows no two streams on the same subjects.
"""

from __future__ import annotations

import re
from typing import Any

from ..config import NatsSection

__all__ = ["StreamError", "covers", "default_stream", "ensure_stream", "stream_name"]


class StreamError(Exception):
    """The stream would not store the gateway's points, cannot be made, or no
    JetStream answers."""


def default_stream(gateway_id: str) -> str:
    """`EDGERT_<id>`, the id reduced to what a stream name may hold."""
    return "EDGERT_" + re.sub(r"[^A-Za-z0-9_-]", "_", gateway_id)


def stream_name(section: NatsSection, gateway_id: str) -> str:
    """The stream this gateway publishes into: `[nats] stream`, else the default."""
    return section.stream or default_stream(gateway_id)


def covers(pattern: str, subject: str) -> bool:
    """True when every subject matching `subject` (wildcards allowed) matches `pattern`."""
    p, s = pattern.split("."), subject.split(".")
    for i, tok in enumerate(p):
        if tok == ">":
            return len(s) > i
        if i >= len(s):
            return False
        if s[i] == ">":
            return False  # the subject's tail is open, the pattern's is not
        if tok != "*" and tok != s[i]:
            return False
    return len(p) == len(s)


async def ensure_stream(js: Any, section: NatsSection, gateway_id: str, base: str) -> str:
    """Make sure a stream stores `<base>.p.>`; return its name and what was done.

    Raises StreamError with a message naming the stream and the subjects.
    """
    from nats.errors import NoRespondersError
    from nats.js.errors import APIError, NotFoundError, ServiceUnavailableError

    points = f"{base}.p.>"
    name = stream_name(section, gateway_id)
    try:
        info = await js.stream_info(name)
    except NotFoundError:
        info = None
    except (NoRespondersError, ServiceUnavailableError):
        domain = section.jetstream_domain
        where = f"JetStream domain {domain!r}" if domain else "JetStream"
        raise StreamError(
            f"JetStream: no answer from {where}: is JetStream enabled on the server"
            f"{', and is that its domain' if domain else ''}? ([nats] jetstream_domain)"
        ) from None
    if info is not None:
        _check(name, list(info.config.subjects or []), points)
        return f"JetStream: using stream {name}"
    if not section.stream:  # the default name: another stream may take our subjects already
        try:
            other = await js.find_stream_name_by_subject(points)
        except NotFoundError:
            other = None
        if other:
            oinfo = await js.stream_info(other)
            _check(other, list(oinfo.config.subjects or []), points)
            return f"JetStream: using stream {other}, which already takes {points}"
    subjects = [points, f"{base}.status"]
    limits: dict[str, Any] = {}
    if section.stream_max_bytes:
        limits["max_bytes"] = section.stream_max_bytes
    if section.stream_max_age:
        limits["max_age"] = float(section.stream_max_age)
    try:
        await js.add_stream(name=name, subjects=subjects, **limits)
    except APIError as e:
        raise StreamError(
            f"JetStream: cannot create stream {name} for {', '.join(subjects)}: "
            f"{e.description or e}"
        ) from None
    shown = ", ".join(_limit(k, v) for k, v in limits.items()) or "no limits"
    return f"JetStream: created stream {name} for {', '.join(subjects)} ({shown})"


def _limit(key: str, value: float) -> str:
    """A stream limit as a person reads it: "max_bytes 256 MiB", "max_age 7 d"."""
    if key == "max_bytes":
        for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
            if value >= size:
                return f"max_bytes {value / size:g} {unit}"
        return f"max_bytes {value:g} B"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if value >= size:
            return f"{key} {value / size:g} {unit}"
    return f"{key} {value:g} s"


def _check(name: str, subjects: list[str], points: str) -> None:
    if not any(covers(s, points) for s in subjects):
        have = ", ".join(subjects) or "none"
        raise StreamError(
            f"JetStream: stream {name} does not take this gateway's subjects {points} "
            f"(its subjects: {have}); add them to it, or set [nats] stream to another name"
        )
