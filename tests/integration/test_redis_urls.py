"""CAIRN_REDIS_URL with credentials (an ACL user) and with TLS (`rediss://`) reaches a real Redis.

Both clients every service builds from the URL are exercised: the process-wide client
(`cairn.runtime.redis.connect`) and the ledger feed's pooled one (`feed_redis`). The embedded
redis-server is built without TLS, so TLS is terminated by a small proxy in front of it; the client
side (what Cairn controls) is real TLS, verified against a private CA given in the URL.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
import redis.exceptions
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cairn.ledger.feed import feed_redis
from cairn.runtime.redis import connect
from cairn.stack.launcher import free_port, redis_server_binary

USER, PASSWORD = "cairn", "s3cret-p4ss"


@pytest.fixture(scope="module")
def acl_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A redis-server whose only usable login is USER/PASSWORD (the default user is off)."""
    port = free_port()
    data = tmp_path_factory.mktemp("acl-redis")
    process = subprocess.Popen(
        [redis_server_binary(), "--bind", "127.0.0.1", "--port", str(port), "--dir", str(data),
         "--save", "", "--appendonly", "no",
         "--user", "default", "off",
         "--user", USER, "on", f">{PASSWORD}", "~*", "&*", "+@all"],
        stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not _acl_ping(port):
            assert process.poll() is None and time.monotonic() < deadline, "redis did not start"
            time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        process.wait(10)


def _acl_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
            conn.sendall(f"AUTH {USER} {PASSWORD}\r\nPING\r\n".encode())
            reply = b""
            while b"+PONG" not in reply and (chunk := conn.recv(64)):
                reply += chunk
            return b"+PONG" in reply
    except OSError:
        return False


async def _round_trip(client: aioredis.Redis) -> None:
    try:
        await client.set("cairn:url-test", b"ok")
        assert await client.get("cairn:url-test") == b"ok"
    finally:
        await client.aclose()


@pytest.mark.parametrize("make_client", [connect, feed_redis])
async def test_url_with_acl_credentials(acl_redis: int, make_client: object) -> None:
    url = f"redis://{USER}:{PASSWORD}@127.0.0.1:{acl_redis}/0"
    assert callable(make_client)
    await _round_trip(make_client(url))
    wrong = make_client(f"redis://{USER}:wrong@127.0.0.1:{acl_redis}/0")
    with pytest.raises(redis.exceptions.AuthenticationError):
        await _round_trip(wrong)


# ---------------------------------------------------------------------------------------- TLS
def _write_ca_and_server_cert(directory: Path) -> tuple[Path, Path, Path]:
    now = datetime.datetime.now(datetime.UTC)

    def make(subject: str, issuer_key: ec.EllipticCurvePrivateKey | None,
             issuer: x509.Name | None, key: ec.EllipticCurvePrivateKey, ca: bool
             ) -> x509.Certificate:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
        builder = (
            x509.CertificateBuilder().subject_name(name).issuer_name(issuer or name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
        return builder.sign(issuer_key or key, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = make("cairn test CA", None, None, ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = make("127.0.0.1", ca_key, ca_cert.subject, server_key, ca=False)
    pem = serialization.Encoding.PEM
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    paths[0].write_bytes(ca_cert.public_bytes(pem))
    paths[1].write_bytes(server_cert.public_bytes(pem))
    paths[2].write_bytes(server_key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return paths


@pytest.fixture
async def tls_proxy(acl_redis: int, tmp_path: Path) -> AsyncIterator[tuple[int, Path]]:
    """A TLS listener forwarding to the ACL Redis: (its port, the CA certificate's path)."""
    ca, cert, key = _write_ca_and_server_cert(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", acl_redis)
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    server = await asyncio.start_server(forward, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    try:
        yield port, ca
    finally:
        server.close()


@pytest.mark.parametrize("make_client", [connect, feed_redis])
async def test_rediss_url_verifies_the_server_and_works(
    tls_proxy: tuple[int, Path], make_client: object
) -> None:
    port, ca = tls_proxy
    assert callable(make_client)
    url = f"rediss://{USER}:{PASSWORD}@127.0.0.1:{port}/0?ssl_ca_certs={ca}"
    await _round_trip(make_client(url))
    # Without the private CA the server's certificate is not trusted: no silent plaintext/insecure.
    untrusted = make_client(f"rediss://{USER}:{PASSWORD}@127.0.0.1:{port}/0")
    with pytest.raises(redis.exceptions.ConnectionError):
        await _round_trip(untrusted)
