"""Local security: points and sockets are private to the gateway's user.

The data dir is created 0700 and the spool 0600; a runtime dir whose parent
another user owns is refused with one clear error; the control socket drops a
frame over its small limit without buffering it; the bus drops a frame over
its limit (a batch's largest) unread, and counts the connection it ended.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import struct
from pathlib import Path

import pytest
import zmq

from edgert.config import loads
from edgert.runtime import Runtime, RuntimeBusy
from edgert.testing import running_gateway, status, wait_for
from edgert.testing.nats import NatsProcess

GATEWAY = """
[gateway]
id = "gw"
runtime_dir = "{rdir}"
data_dir = "{data}"
[nats]
url = "{url}"

[[driver]]
name = "gen"
type = "sim"
[[driver.signal]]
name = "temp"
shape = "sine"
rate = 5.0
"""


def config(short_dir: Path, rdir: Path, url: str = "nats://127.0.0.1:1"):
    return loads(GATEWAY.format(url=url, rdir=rdir, data=short_dir / "data"))


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_data_dir_is_0700_and_spool_0600_and_control_drops_big_frames(
    short_dir: Path,
) -> None:
    old = os.umask(0o022)
    try:
        with NatsProcess(short_dir / "nats") as srv:
            cfg = config(short_dir, short_dir / "run" / "gw", srv.url)
            with running_gateway(cfg):
                wait_for(
                    lambda: status(cfg)["by_name"]["bridge"]["stats"].get("nats") == "connected",
                    15,
                    "bridge on NATS",
                )
                assert stat.S_IMODE(os.stat(cfg.data_dir).st_mode) == 0o700
                spool = wait_for(
                    lambda: [p for p in Path(cfg.data_dir).iterdir() if p.name.startswith("spool")],
                    10,
                    "the spool files",
                )
                for p in spool:
                    assert stat.S_IMODE(os.stat(p).st_mode) == 0o600, p
                # a 16 MB request on the control socket: dropped, not buffered
                me = os.getpid()  # the supervisor runs in this process (a thread)
                before = rss_kb(me)
                for _ in range(4):
                    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                        sock.connect(f"{cfg.runtime_dir}/control.sock")
                        big = 16 * 1024 * 1024
                        with contextlib.suppress(OSError):  # the gateway hangs up on it
                            sock.sendall(struct.pack(">I", big) + b"x" * big)
                        sock.settimeout(10)
                        try:
                            got = sock.recv(1)
                        except ConnectionResetError:
                            got = b""
                        assert got == b""  # dropped without an answer
                # the gateway still answers, and did not hold the frames
                assert status(cfg)["by_name"]["gen"]["state"] == "running"
                grown = rss_kb(me) - before
                assert grown < 32 * 1024, f"parent grew by {grown} kB"
    finally:
        os.umask(old)


def test_a_runtime_dir_parent_owned_by_another_user_is_refused(short_dir: Path) -> None:
    parent = short_dir / "theirs"
    parent.mkdir()
    os.chown(parent, 65534, 65534)
    cfg = config(short_dir, parent / "gw")
    with pytest.raises(RuntimeBusy, match=r"theirs is owned by uid 65534"):
        Runtime(cfg).run()
    assert not (parent / "gw" / "control.sock").exists()


def test_a_runtime_dir_parent_writable_by_others_is_refused(short_dir: Path) -> None:
    parent = short_dir / "open"
    parent.mkdir()
    os.chmod(parent, 0o777)
    cfg = config(short_dir, parent / "gw")
    with pytest.raises(RuntimeBusy, match=r"open is writable by other users"):
        Runtime(cfg).run()


def test_the_bus_drops_a_frame_over_its_limit_and_counts_it(short_dir: Path) -> None:
    with NatsProcess(short_dir / "nats") as srv:
        cfg = config(short_dir, short_dir / "run" / "gw", srv.url)
        with running_gateway(cfg):
            b = wait_for(
                lambda: (
                    (b := status(cfg)["by_name"]["bridge"])["stats"].get("nats") == "connected"
                    and b
                ),
                15,
                "bridge on NATS",
            )
            pid, before = b["pid"], rss_kb(b["pid"])
            assert b["stats"]["bus_disconnects"] == 0
            zctx = zmq.Context(1)
            sock = zctx.socket(zmq.DEALER)
            try:  # a sender on the bus with frames of 16 MB: never read, its link dropped
                sock.setsockopt(zmq.LINGER, 0)
                sock.setsockopt(zmq.ROUTING_ID, b"rogue")
                sock.connect(f"ipc://{cfg.runtime_dir}/bus.sock")
                for _ in range(4):
                    sock.send(b"\x95" + b"x" * (16 * 1024 * 1024))
                b = wait_for(
                    lambda: (
                        (b := status(cfg)["by_name"]["bridge"])["stats"]["bus_disconnects"] and b
                    ),
                    15,
                    "the dropped connection counted",
                )
            finally:
                sock.close(0)
                zctx.term()
            assert b["pid"] == pid and b["restarts"] == 0
            assert b["stats"]["bad_frames"] == 0  # dropped before it was read
            grown = rss_kb(pid) - before
            assert grown < 32 * 1024, f"bridge grew by {grown} kB"
            out = status(cfg)["by_name"]["gen"]["points_out"]
            wait_for(  # the driver's points still flow, acknowledged
                lambda: (
                    (g := status(cfg)["by_name"]["gen"])["points_out"] > out + 10
                    and g["buffered"] < 50
                ),
                15,
                "the driver still delivering",
            )
