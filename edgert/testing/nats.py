"""Helpers for tests and benchmarks that need a real NATS server.

`NatsProcess(directory)` runs `nats-server` (JetStream on, storing in
`directory`) on a free port as a context manager; `stop()` and `start()` take it
down and bring it back on the same port, for outage tests, and `kill()` takes it
down with SIGKILL. Given a JetStream `domain`, a `leafnode_port` to accept leaf
nodes on, `leaf_remotes` to connect to as a leaf node, a `cluster` to join or
raw `config` text (an `authorization` block, ...), it runs from a config file
written into `directory`. `NatsCluster(directory, size)` runs a cluster of such
servers with JetStream on each. `LinkProxy(target_port)` forwards TCP to a
server and can `cut()` and `restore()` the link, for leaf-node outages. `Subscriber(url,
subject)` collects messages in a background thread (started and joined by its
`with` block) and survives server restarts; `stream_messages()` reads back
everything a JetStream stream holds. `decode(msg)` decodes a payload by its
Content-Type header. Nothing here is used by the runtime itself.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack

from edgert.natsserver import find_nats_server
from edgert.roundtrip import round_trip
from edgert.testing import wait_for

__all__ = [
    "NatsProcess",
    "NatsCluster",
    "LinkProxy",
    "Subscriber",
    "Message",
    "stream_messages",
    "request",
    "decode",
    "free_port",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class NatsProcess:
    """A nats-server on 127.0.0.1 for the length of a `with` block."""

    def __init__(
        self,
        directory: str | Path,
        *,
        port: int | None = None,
        token: str | None = None,
        user: str | None = None,
        password: str | None = None,
        tls: dict[str, str] | None = None,
        name: str | None = None,
        domain: str | None = None,
        jetstream_domain: str | None = None,  # the same as `domain`
        leafnode_port: int | None = None,
        leaf_remotes: list[str] | None = None,
        cluster: tuple[str, int, list[int]] | None = None,
        config: str = "",
    ) -> None:
        self.directory = Path(directory)
        self.tls = tls  # {"cert", "key", "ca"}: TLS, and with "ca" client certificates required
        self.port = port or free_port()
        self.token = token
        self.user = user
        self.password = password
        self.name = name  # server_name
        self.domain = domain or jetstream_domain  # JetStream domain, as a leaf node has
        self.leafnode_port = leafnode_port  # accept leaf nodes here
        self.leaf_remotes = leaf_remotes or []  # connect to these as a leaf node
        self.cluster = cluster  # (cluster name, route port, route ports of the others)
        self.config = config  # raw text added to the config file
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{'tls' if self.tls else 'nats'}://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        args = [find_nats_server(), "-a", "127.0.0.1", "-p", str(self.port)]
        args += ["-l", str(self.directory / "server.log")]
        if self._uses_file():
            args += ["-c", str(self.write_config())]  # JetStream set up in the file
        else:
            args += ["-js", "-sd", str(self.directory)]
        if self.user is not None:
            args += ["--user", self.user, "--pass", self.password or ""]
        elif self.token is not None:
            args += ["--auth", self.token]
        if self.tls:
            args += ["--tls", "--tlscert", self.tls["cert"], "--tlskey", self.tls["key"]]
            if "ca" in self.tls:
                args += ["--tlscacert", self.tls["ca"], "--tlsverify"]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL)
        try:
            wait_for(self._accepting, timeout, f"nats-server on port {self.port}")
        except BaseException:
            self.stop()  # a server that never came up is not left running
            raise

    def _uses_file(self) -> bool:
        return bool(
            self.name or self.domain or self.leafnode_port or self.leaf_remotes or self.cluster
        ) or bool(self.config)

    def write_config(self) -> Path:
        """The server's config file (what the options say beyond the command line)."""
        lines = []
        if self.name:
            lines.append(f"server_name: {self.name}")
        if not re.search(r"(?m)^\s*jetstream\b", self.config):  # else the config's own block
            js = f'store_dir: "{self.directory}"'
            lines.append(f"jetstream {{ {js}{f', domain: {self.domain}' if self.domain else ''} }}")
        if self.leafnode_port:
            lines.append(f"leafnodes {{ listen: 127.0.0.1:{self.leafnode_port} }}")
        if self.leaf_remotes:
            urls = ", ".join(f'"{u}"' for u in self.leaf_remotes)
            lines.append(f"leafnodes {{ remotes = [ {{ urls: [{urls}] }} ] }}")
        if self.cluster:
            name, port, others = self.cluster
            routes = ", ".join(f'"nats-route://127.0.0.1:{p}"' for p in others)
            lines.append(
                f"cluster {{ name: {name}, listen: 127.0.0.1:{port}, routes: [{routes}] }}"
            )
        lines.append(self.config)
        path = self.directory / "server.conf"
        path.write_text("\n".join(lines) + "\n")
        return path

    def _accepting(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"nats-server exited with code {self.proc.returncode}")
        with socket.socket() as s:
            s.settimeout(0.5)
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def kill(self) -> None:
        """Take the server down at once (SIGKILL), as a crash or a power cut does."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def __enter__(self) -> NatsProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class NatsCluster:
    """`size` nats-servers on 127.0.0.1 routed into one cluster, JetStream on each."""

    def __init__(self, directory: str | Path, size: int = 3, name: str = "edgert") -> None:
        self.directory = Path(directory)
        routes = [free_port() for _ in range(size)]
        self.nodes = [
            NatsProcess(
                self.directory / f"n{i}",
                name=f"{name}-n{i}",
                cluster=(name, routes[i], [p for j, p in enumerate(routes) if j != i]),
            )
            for i in range(size)
        ]

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    def start(self, timeout: float = 30.0) -> None:
        try:
            for n in self.nodes:
                n.start()
            wait_for(self._jetstream_ready, timeout, "the cluster's JetStream", interval=0.2)
        except BaseException:
            self.stop()
            raise

    def _jetstream_ready(self) -> bool:
        size = len(self.nodes)

        async def ask() -> bool:
            import nats

            nc = await nats.connect(self.urls, connect_timeout=1, max_reconnect_attempts=1)
            js = nc.jetstream(timeout=2)
            try:  # ready when a stream with a replica on every node can be made
                await js.add_stream(name="READY", subjects=["_ready"], num_replicas=size)
                await js.delete_stream("READY")
                return True
            except Exception:  # noqa: BLE001 - no meta leader yet, or not every peer known
                return False
            finally:
                await nc.close()

        return asyncio.run(ask())

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()

    def __enter__(self) -> NatsCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class LinkProxy:
    """A TCP forwarder on 127.0.0.1 to `target_port` whose link can be cut and restored.

    `cut()` closes every connection through it and stops accepting new ones (the
    port refuses, as an unplugged uplink does); `restore()` accepts again on the
    same port. It runs one thread of its own, started and joined by its `with`
    block; `cut` and `restore` return once the link is in that state.
    """

    def __init__(self, target_port: int, port: int | None = None) -> None:
        self.target_port = target_port
        self.port = port or free_port()
        self.connections = 0  # accepted so far
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()

    def __enter__(self) -> LinkProxy:
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(),), name="proxy")
        self._thread.start()
        wait_for(self._ready.is_set, 10, "the link proxy")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)

    def cut(self) -> None:
        """Close every connection and refuse new ones."""
        self._call(self._cut())

    def restore(self) -> None:
        """Accept connections again on the same port."""
        self._call(self._listen())

    def _call(self, coro: Any) -> None:
        assert self._loop is not None, "use LinkProxy in a with block"
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        await self._listen()
        self._ready.set()
        await self._stop.wait()
        await self._cut()

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._pipe, "127.0.0.1", self.port)

    async def _cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()

    async def _pipe(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            tr, tw = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            w.transport.abort()
            return
        self._writers |= {w, tw}

        async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                dst.transport.abort()  # one side gone: the other goes too

        await asyncio.gather(copy(r, tw), copy(tr, w))
        self._writers -= {w, tw}


@dataclass
class Message:
    subject: str
    headers: dict[str, str]
    data: bytes


def decode(msg: Message) -> Any:
    """A message's payload (a batch of point maps, a status, a reply) by its Content-Type."""
    ctype = msg.headers.get("Content-Type")
    if ctype == "application/json":
        return json.loads(msg.data)
    if ctype == "application/msgpack":
        return msgpack.unpackb(msg.data, raw=False)
    raise ValueError(f"unexpected Content-Type {ctype!r} on {msg.subject}")


class Subscriber:
    """Collects the messages on `subject` into `.messages`, from a thread of its own."""

    def __init__(self, url: str, subject: str, **connect: Any) -> None:
        self.url = url
        self.subject = subject
        self.connect = connect
        self.messages: list[Message] = []
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._decoded: list[dict[str, Any]] = []  # the points of messages[:_upto]
        self._upto = 0

    def __enter__(self) -> Subscriber:
        self._thread = threading.Thread(target=self._run, name=f"sub-{self.subject}")
        self._thread.start()
        wait_for(lambda: self._ready.is_set() or self._error, 10, f"subscription to {self.subject}")
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as e:  # noqa: BLE001 - shown to the test's thread
            self._error = e

    async def _main(self) -> None:
        import nats

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        nc = await nats.connect(
            self.url, max_reconnect_attempts=-1, reconnect_time_wait=0.1, **self.connect
        )
        try:
            sub = await nc.subscribe(self.subject)
            await round_trip(nc, 10.0)  # not nc.flush(): its PING can overtake the SUB
            self._ready.set()
            while not self._stop.is_set():
                try:
                    m = await sub.next_msg(timeout=0.1)
                except nats.errors.TimeoutError:
                    continue
                except nats.errors.ConnectionClosedError:
                    break
                self.messages.append(Message(m.subject, dict(m.headers or {}), m.data))
        finally:
            await nc.close()

    def points(self, node: str | None = None) -> list[dict[str, Any]]:
        """Every point received so far (of `node`), in order.

        Each message is decoded once: a test polling this while a driver runs at full
        speed costs time linear in the points, not in the polls times the points (with
        msgpack's pure-Python fallback the quadratic version outlasted a test's timeout).
        """
        new = self.messages[self._upto :]
        self._upto += len(new)
        self._decoded += [p for m in new if ".p." in m.subject for p in decode(m)]
        return [p for p in self._decoded if node is None or p["node"] == node]


def stream_messages(
    url: str, stream: str, domain: str | None = None, **connect: Any
) -> list[Message]:
    """Every message a JetStream stream (in JetStream `domain`) holds now, in stream order.
    A cluster that answers "temporarily unavailable" (a stream leader being elected
    after a node came back) is asked again, for 30 s at most."""

    async def read() -> list[Message]:
        import nats

        async def patiently(call: Any) -> Any:
            deadline = time.monotonic() + 30
            while True:
                try:
                    return await call()
                except nats.js.errors.ServiceUnavailableError:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.2)

        nc = await nats.connect(url, **connect)
        try:
            js = nc.jetstream(domain=domain) if domain else nc.jetstream()
            state = (await patiently(lambda: js.stream_info(stream))).state
            out: list[Message] = []
            for seq in range(state.first_seq, state.last_seq + 1):
                try:
                    m = await patiently(lambda seq=seq: js.get_msg(stream, seq))
                except nats.js.errors.NotFoundError:
                    continue
                out.append(Message(m.subject, dict(m.headers or {}), m.data or b""))
            return out
        finally:
            await nc.close()

    return asyncio.run(read())


def request(
    url: str,
    subject: str,
    data: bytes,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
    **connect: Any,
) -> Message:
    """One NATS request/reply; the reply as a Message."""

    async def ask() -> Message:
        import nats

        nc = await nats.connect(url, **connect)
        try:
            m = await nc.request(subject, data, timeout=timeout, headers=headers)
            return Message(m.subject, dict(m.headers or {}), m.data)
        finally:
            await nc.close()

    return asyncio.run(ask())


def make_certificates(directory: str | Path) -> dict[str, str]:
    """A test CA, a server certificate for 127.0.0.1 and a client certificate.

    Returns the paths: ca, server_cert, server_key, client_cert, client_key.
    """
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def cert(cn: str, key: Any, issuer: x509.Name, signer: Any, *exts: Any) -> x509.Certificate:
        # Key identifiers on every certificate: Python 3.13's default TLS context
        # verifies strictly (VERIFY_X509_STRICT) and refuses a chain without them.
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key())
        b = x509.CertificateBuilder().subject_name(name(cn)).issuer_name(issuer)
        b = b.public_key(key.public_key()).serial_number(x509.random_serial_number())
        b = b.not_valid_before(now - datetime.timedelta(minutes=5))
        b = b.not_valid_after(now + datetime.timedelta(days=2))
        for ext, critical in (*exts, (ski, False), (aki, False)):
            b = b.add_extension(ext, critical=critical)
        return b.sign(signer, hashes.SHA256())

    def usage(*, sign_certs: bool) -> x509.KeyUsage:
        return x509.KeyUsage(
            digital_signature=True,
            content_commitment=False,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=sign_certs,
            crl_sign=sign_certs,
            encipher_only=False,
            decipher_only=False,
        )

    def write(stem: str, key: Any, c: x509.Certificate) -> None:
        (d / f"{stem}.pem").write_bytes(c.public_bytes(serialization.Encoding.PEM))
        (d / f"{stem}.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = cert(
        "test CA",
        ca_key,
        name("test CA"),
        ca_key,
        (x509.BasicConstraints(ca=True, path_length=None), True),
        (usage(sign_certs=True), True),
    )
    write("ca", ca_key, ca)
    ip = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    for stem, purpose, extra in (
        ("server", ExtendedKeyUsageOID.SERVER_AUTH, [(ip, False)]),
        ("client", ExtendedKeyUsageOID.CLIENT_AUTH, []),
    ):
        key = ec.generate_private_key(ec.SECP256R1())
        exts = [
            (x509.BasicConstraints(ca=False, path_length=None), True),
            (usage(sign_certs=False), True),
            (x509.ExtendedKeyUsage([purpose]), False),
            *extra,
        ]
        write(stem, key, cert(stem, key, ca.subject, ca_key, *exts))
    return {
        "ca": str(d / "ca.pem"),
        "server_cert": str(d / "server.pem"),
        "server_key": str(d / "server.key"),
        "client_cert": str(d / "client.pem"),
        "client_key": str(d / "client.key"),
    }
