"""The shared HTTP server: keep-alive, body caps, streaming with hang-up, take-over."""
from __future__ import annotations

import asyncio
import http.client
from collections.abc import AsyncIterator

import pytest

from edgectl.httpd import TAKEN_OVER, HTTPServer, Request, Response, Router, json_response


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


async def start(handler) -> tuple[HTTPServer, int]:  # type: ignore[no-untyped-def]
    server = HTTPServer(handler, max_body=1024)
    _, port = await server.start("127.0.0.1", 0)
    return server, port


def test_keepalive_and_query() -> None:
    async def handler(req: Request) -> Response:
        return json_response(200, {"path": req.path, "q": req.arg("x"), "len": len(req.body)})

    async def main() -> None:
        server, port = await start(handler)
        try:
            def client() -> list[bytes]:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                out = []
                for i in range(3):
                    conn.request("POST", f"/a%20b?x={i}", body=b"hello")
                    resp = conn.getresponse()
                    out.append(resp.read())
                sock_reused = conn.sock is not None
                conn.close()
                assert sock_reused
                return out

            bodies = await asyncio.to_thread(client)
            assert bodies[2] == b'{"path":"/a b","q":"2","len":5}'
        finally:
            await server.close()

    run(main())


def test_body_cap_answers_413() -> None:
    async def handler(req: Request) -> Response:
        return json_response(200, {})

    async def main() -> None:
        server, port = await start(handler)
        try:
            def client() -> int:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("POST", "/", body=b"x" * 5000)
                return conn.getresponse().status

            assert await asyncio.to_thread(client) == 413
        finally:
            await server.close()

    run(main())


def test_stream_stops_producer_when_client_leaves() -> None:
    finished = asyncio.Event()

    async def handler(req: Request) -> Response:
        async def body() -> AsyncIterator[bytes]:
            try:
                yield b"first\n"
                await asyncio.sleep(3600)  # an idle watch
                yield b"never\n"
            finally:
                finished.set()

        return Response(200, [("Content-Type", "text/plain")], body())

    async def main() -> None:
        server, port = await start(handler)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /w HTTP/1.1\r\nHost: x\r\n\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
            assert b"chunked" in head.lower()
            assert b"first" in await reader.readuntil(b"first\n")
            writer.close()
            await asyncio.wait_for(finished.wait(), 5)
        finally:
            await server.close()

    run(main())


def test_upgrade_take_over_keeps_pending_bytes() -> None:
    async def echo(req: Request) -> Response:
        raw = req.take_over()
        raw.writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n" + raw.pending)
        while data := await raw.reader.read(1024):
            raw.writer.write(data)
        raw.writer.close()
        return TAKEN_OVER

    router = Router()
    router.add("/echo", echo)

    async def main() -> None:
        server, port = await start(router)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\nearly")
            await reader.readuntil(b"\r\n\r\n")
            assert await reader.readexactly(5) == b"early"
            writer.write(b"later")
            assert await reader.readexactly(5) == b"later"
            writer.close()
        finally:
            await server.close()

    run(main())


def test_take_over_refused_for_plain_request() -> None:
    async def handler(req: Request) -> Response:
        with pytest.raises(RuntimeError):
            req.take_over()
        return json_response(200, {"ok": True})

    async def main() -> None:
        server, port = await start(handler)
        try:
            status = await asyncio.to_thread(lambda: _get(port))
            assert status == 200
        finally:
            await server.close()

    run(main())


def _get(port: int) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", "/")
    return conn.getresponse().status


def test_close_does_not_wait_for_a_silent_tls_peer(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A TLS client holding a streamed response open and never answering
    close_notify must not hold up server shutdown (it hung for 10 s+ before)."""
    import ssl
    import time

    from edgectl.tunnel.selfsigned import write_tls_files

    files = write_tls_files(tmp_path)

    async def handler(req: Request) -> Response:
        async def body() -> AsyncIterator[bytes]:
            yield b"first\n"
            await asyncio.sleep(3600)

        return Response(200, [], body())

    async def main() -> float:
        server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_ctx.load_cert_chain(files.server_cert, files.server_key)
        server = HTTPServer(handler, ssl_context=server_ctx)
        _, port = await server.start("127.0.0.1", 0)
        client_ctx = ssl.create_default_context(cafile=str(files.ca_cert))
        # A raw TLS client in a thread that reads the head, then goes silent.
        import socket
        import threading

        ready = threading.Event()
        release = threading.Event()

        def client() -> None:
            with socket.create_connection(("127.0.0.1", port)) as raw:
                with client_ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                    tls.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                    tls.recv(4096)
                    ready.set()
                    release.wait(30)

        thread = threading.Thread(target=client, daemon=True)
        thread.start()
        await asyncio.to_thread(ready.wait, 10)
        started = time.monotonic()
        await server.close()
        took = time.monotonic() - started
        release.set()
        return took

    assert asyncio.run(main()) < 5.0


def test_oversized_head_is_431_however_it_arrives() -> None:
    async def handler(req: Request) -> Response:
        return json_response(200, {})

    async def main() -> list[bytes]:
        server, port = await start(handler)
        statuses = []
        try:
            for split in (False, True):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n"
                if split:
                    writer.write(head[:40_000])
                    await writer.drain()
                    await asyncio.sleep(0.05)
                    writer.write(head[40_000:])
                else:
                    writer.write(head)
                statuses.append((await reader.readline()).split()[1])
                writer.close()
        finally:
            await server.close()
        return statuses

    assert run(main()) == [b"431", b"431"]


def test_plain_http_to_the_tls_port_gets_upstreams_400(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """As kube-apiserver answers: a readable 400, not a failed handshake and a silent close.
    TLS clients on the same port are unaffected."""
    import ssl

    from edgectl.tunnel.selfsigned import write_tls_files

    files = write_tls_files(tmp_path)

    async def handler(req: Request) -> Response:
        return json_response(200, {"tls": True})

    async def main() -> tuple[bytes, int]:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(files.server_cert, files.server_key)
        server = HTTPServer(handler, ssl_context=ctx)
        _, port = await server.start("127.0.0.1", 0)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /api HTTP/1.1\r\nHost: x\r\n\r\n")
            plain = await asyncio.wait_for(reader.read(), 5)
            writer.close()

            def tls_get() -> int:
                client = http.client.HTTPSConnection("127.0.0.1", port, timeout=5,
                                                     context=ssl.create_default_context(cafile=str(files.ca_cert)))
                client.request("GET", "/")
                return client.getresponse().status

            status = await asyncio.to_thread(tls_get)
        finally:
            await server.close()
        return plain, status

    plain, status = asyncio.run(main())
    assert plain.startswith(b"HTTP/1.0 400 Bad Request") and b"Client sent an HTTP request to an HTTPS server." in plain
    assert status == 200
