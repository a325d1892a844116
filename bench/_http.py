"""A small HTTP/1.1 load generator on asyncio streams, and server subprocesses.

The client speaks just enough HTTP/1.1 (keep-alive, Content-Length or chunked bodies) to
stay far cheaper per request than the Python servers it measures, so the servers, not
the client, set the pace. It only ever connects to 127.0.0.1, and every load is bounded
in request count and in time.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

from bench._util import child_cwd, child_env, percentile

HOST = "127.0.0.1"


class Connection:
    """One keep-alive connection; it reconnects when the server closes it (Hypercorn
    closes a connection after ``keep_alive_max_requests``, 1,000 by default)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.reconnects = 0

    @classmethod
    async def open(cls, port: int) -> Connection:
        conn = cls(port)
        await conn._connect()
        return conn

    async def _connect(self) -> None:
        self.close()
        self.reader, self.writer = await asyncio.open_connection(HOST, self.port, limit=1 << 20)

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        """Send one request; return (status, body)."""
        if self.writer is None:
            await self._connect()
            self.reconnects += 1
        try:
            return await self._exchange(raw)
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            if isinstance(exc, asyncio.IncompleteReadError) and exc.partial:
                raise
            # Closed while idle between two requests: send it again on a new connection.
            await self._connect()
            self.reconnects += 1
            return await self._exchange(raw)

    async def _exchange(self, raw: bytes) -> tuple[int, bytes]:
        assert self.reader is not None and self.writer is not None
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            body = await self.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    await self.reader.readuntil(b"\r\n")
                    break
                parts.append((await self.reader.readexactly(size + 2))[:-2])
            body = b"".join(parts)
        else:
            body = b""  # 204, 304: no body
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def http_request(
    method: str, path: str, port: int, body: Any = None, headers: dict[str, str] | None = None
) -> bytes:
    """The bytes of one HTTP/1.1 request (JSON body if ``body`` is given)."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}:{port}"]
    payload = b""
    if body is not None:
        payload = json.dumps(body).encode()
        lines += ["Content-Type: application/json", f"Content-Length: {len(payload)}"]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


def _summary(latencies: list[float], errors: int, elapsed: float) -> dict[str, float]:
    return {
        "requests": float(len(latencies)),
        "errors": float(errors),
        "rps": len(latencies) / elapsed if elapsed > 0 else 0.0,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "max_ms": max(latencies, default=float("nan")) * 1000,
    }


async def closed_loop(
    port: int,
    make_request: Callable[[int], bytes],
    *,
    total: int,
    concurrency: int,
    time_cap: float,
    ok: Sequence[int] = (200, 201, 204),
) -> dict[str, float]:
    """``concurrency`` keep-alive connections each sending back-to-back requests until
    ``total`` were sent or ``time_cap`` seconds passed. Latency: send to last byte."""
    latencies: list[float] = []
    errors = 0
    next_index = 0
    deadline = time.perf_counter() + time_cap

    async def worker() -> None:
        nonlocal next_index, errors
        conn = await Connection.open(port)
        try:
            while next_index < total and time.perf_counter() < deadline:
                index = next_index
                next_index += 1
                raw = make_request(index)
                sent = time.perf_counter()
                status, _body = await conn.request(raw)
                latencies.append(time.perf_counter() - sent)
                if status not in ok:
                    errors += 1
        finally:
            conn.close()

    begin = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return _summary(latencies, errors, time.perf_counter() - begin)


async def open_loop(
    port: int,
    make_request: Callable[[int], bytes],
    *,
    rate: float,
    duration: float,
    connections: int,
) -> dict[str, float]:
    """Requests at a fixed rate (an open loop), spread over ``connections`` keep-alive
    connections. Latency runs from when a request was due to go out (or was queued, if
    the client itself was late) to its last byte, so a stalled server is not hidden by
    the client waiting for it (no coordinated omission)."""
    queue: asyncio.Queue[tuple[int, float] | None] = asyncio.Queue()
    latencies: list[float] = []
    errors = 0
    total = int(rate * duration)
    conns = [await Connection.open(port) for _ in range(connections)]
    begin = time.perf_counter() + 0.01

    async def producer() -> None:
        for index in range(total):
            delay = begin + index / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            queue.put_nowait((index, max(begin + index / rate, time.perf_counter())))
        for _ in conns:
            queue.put_nowait(None)

    async def worker(conn: Connection) -> None:
        nonlocal errors
        while (item := await queue.get()) is not None:
            index, due = item
            status, _body = await conn.request(make_request(index))
            latencies.append(time.perf_counter() - due)
            if status != 200:
                errors += 1

    try:
        await asyncio.wait_for(
            asyncio.gather(producer(), *(worker(c) for c in conns)), timeout=duration + 30
        )
    finally:
        for conn in conns:
            conn.close()
    return _summary(latencies, errors, time.perf_counter() - begin)


async def get_json(port: int, path: str) -> Any:
    conn = await Connection.open(port)
    try:
        status, body = await conn.request(http_request("GET", path, port))
    finally:
        conn.close()
    if status != 200:
        raise RuntimeError(f"GET {path}: HTTP {status}: {body[:300]!r}")
    return json.loads(body)


# ------------------------------------------------------------------------ servers


class Server:
    """A server subprocess on 127.0.0.1:``port``; stop it with :meth:`stop` (in finally)."""

    def __init__(self, cmd: list[str], port: int, ready_path: str, env: dict[str, str]) -> None:
        self.port = port
        self.ready_path = ready_path
        # A file, not a pipe: a chatty server must never block on a full pipe.
        self.log = tempfile.TemporaryFile("w+")  # noqa: SIM115  # closed in stop()
        self.proc = subprocess.Popen(
            cmd, cwd=child_cwd(), env=env, stdout=self.log, stderr=subprocess.STDOUT, text=True
        )

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()[-3000:]

    async def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.output()}")
            try:
                await get_json(self.port, self.ready_path)
                return
            except (OSError, RuntimeError, asyncio.IncompleteReadError, ValueError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()


def serve(kind: str, port: int, params: dict[str, Any], ready_path: str) -> Server:
    """Start ``bench._serve`` (Hypercorn or waitress) or gunicorn for ``kind``."""
    env = child_env()
    env["BENCH_PARAMS"] = json.dumps(params)
    if kind == "gunicorn":
        cmd = [
            sys.executable,
            "-m",
            "gunicorn",
            "--workers=1",  # one process: Flask-APScheduler runs one scheduler per process
            "--threads=4",
            "--worker-class=gthread",
            f"--bind={HOST}:{port}",
            "--log-level=warning",
            "bench.apps:flask_api_app()",
        ]
    else:
        cmd = [sys.executable, "-m", "bench._serve", kind, str(port)]
    return Server(cmd, port, ready_path, env)
