"""Helpers for tests and benchmarks that need a real NATS server.

`NatsProcess(directory)` runs `nats-server` (JetStream on, storing in
`directory`; `jetstream_domain=` gives it a JetStream domain, as a leaf node's
own JetStream has) on a free port as a context manager; `stop()` and `start()`
take it down and bring it back on the same port, for outage tests.
`Subscriber(url, subject)` collects messages in a background thread (started
and joined by its `with` block) and survives server restarts;
`stream_messages()` reads back everything a JetStream stream holds. `decode(msg)` decodes a payload by its
Content-Type header. Nothing here is used by the runtime itself.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack

from edgert.natsserver import find_nats_server
from edgert.testing import wait_for

__all__ = [
    "NatsProcess",
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
        jetstream_domain: str | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.jetstream_domain = jetstream_domain  # a JetStream domain, as a leaf node has
        self.tls = tls  # {"cert", "key", "ca"}: TLS, and with "ca" client certificates required
        self.port = port or free_port()
        self.token = token
        self.user = user
        self.password = password
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{'tls' if self.tls else 'nats'}://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        args = [find_nats_server(), "-a", "127.0.0.1", "-p", str(self.port), "-js"]
        args += ["-sd", str(self.directory), "-l", str(self.directory / "server.log")]
        if self.jetstream_domain:
            conf = self.directory / "server.conf"
            conf.write_text(f"jetstream {{ domain: {self.jetstream_domain} }}\n")
            args += ["-c", str(conf)]
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

    def __enter__(self) -> NatsProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


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
            await nc.flush()
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
        """Every point received so far (of `node`), in order."""
        return [
            p
            for m in list(self.messages)
            if ".p." in m.subject
            for p in decode(m)
            if node is None or p["node"] == node
        ]


def stream_messages(
    url: str, stream: str, domain: str | None = None, **connect: Any
) -> list[Message]:
    """Every message a JetStream stream (in JetStream `domain`) holds now, in stream order."""

    async def read() -> list[Message]:
        import nats

        nc = await nats.connect(url, **connect)
        try:
            js = nc.jetstream(domain=domain) if domain else nc.jetstream()
            state = (await js.stream_info(stream)).state
            out: list[Message] = []
            for seq in range(state.first_seq, state.last_seq + 1):
                try:
                    m = await js.get_msg(stream, seq)
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
