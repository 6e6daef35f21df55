"""Under systemd (Type=notify, WatchdogSec): READY once every actor runs, WATCHDOG while
the supervisor's loop turns, STATUS, and STOPPING on SIGTERM, on the real notify socket."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from edgert.testing import wait_for


def test_edgert_run_notifies_systemd(short_dir: Path) -> None:
    cfg = short_dir / "gw.toml"
    cfg.write_text(
        f'[gateway]\nid = "sd"\nruntime_dir = "{short_dir}/run"\ndata_dir = "{short_dir}/data"\n'
        "[nats]\nenabled = false\n"
        '[[driver]]\nname = "gen"\ntype = "sim"\n'
        '[[driver.signal]]\nname = "n"\nrate = 5.0\n'
    )
    path = str(short_dir / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.2)
    env = dict(os.environ, NOTIFY_SOCKET=path, WATCHDOG_USEC="400000")  # every 0.2 s
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgert", "run", str(cfg)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    got: list[tuple[float, str]] = []

    def receive_until(what: str) -> bool:
        try:
            got.extend((time.monotonic(), m) for m in sock.recv(4096).decode().split("\n"))
        except TimeoutError:
            pass
        return any(m == what for _, m in got)

    try:
        wait_for(lambda: receive_until("READY=1"), 20, "READY=1")
        n = sum(m == "WATCHDOG=1" for _, m in got)
        wait_for(
            lambda: receive_until("") or sum(m == "WATCHDOG=1" for _, m in got) >= n + 5,
            10,
            "five more WATCHDOG=1",
        )
        proc.send_signal(signal.SIGTERM)
        wait_for(lambda: receive_until("STOPPING=1"), 10, "STOPPING=1")
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        sock.close()
    statuses = [m for _, m in got if m.startswith("STATUS=")]
    assert any("running 1" in m for m in statuses), statuses
    beats = [t for t, m in got if m == "WATCHDOG=1"]
    gaps = [b - a for a, b in zip(beats, beats[1:], strict=False)]
    assert gaps and max(gaps) < 0.4 + 0.3  # never near the 0.4 s limit, even on a loaded machine


def test_a_failed_driver_is_in_the_status_line_and_the_gateway_is_ready(short_dir: Path) -> None:
    cfg = short_dir / "gw.toml"
    cfg.write_text(
        f'[gateway]\nid = "sd"\nruntime_dir = "{short_dir}/run"\ndata_dir = "{short_dir}/data"\n'
        "[nats]\nenabled = false\n"
        "[supervisor]\nintensity = 1\nbackoff_min = 0.05\nbackoff_max = 0.1\n"
        '[[driver]]\nname = "gen"\ntype = "sim"\n'
        '[[driver.signal]]\nname = "n"\nrate = 5.0\n'
        '[[driver]]\nname = "bad"\ntype = "edgert.testing:FaultActor"\nmode = "crash"\n'
    )
    path = str(short_dir / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.2)
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgert", "run", str(cfg)],
        env=dict(os.environ, NOTIFY_SOCKET=path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    got: list[str] = []

    def receive_until(pred) -> bool:
        try:
            got.extend(sock.recv(4096).decode().split("\n"))
        except TimeoutError:
            pass
        return any(pred(m) for m in got)

    try:
        wait_for(lambda: receive_until(lambda m: "failed 1 (bad)" in m), 20, "STATUS with failed")
        wait_for(lambda: receive_until(lambda m: m == "READY=1"), 10, "READY=1")
        status = [m for m in got if m.startswith("STATUS=") and "failed" in m][-1]
        assert "running 1" in status
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        sock.close()
