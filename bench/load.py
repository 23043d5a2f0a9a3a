"""A lean HTTP/1.1 keep-alive load generator for GET latency.

httpx's async pool costs more CPU per request than the endpoints being measured, and the load
generator shares the machine with the server, so it would dominate the numbers. This client
speaks just enough HTTP/1.1 (Content-Length bodies, keep-alive) to time GET requests.
"""

from __future__ import annotations

import asyncio
import gc
import time
from urllib.parse import urlsplit


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    if length:
        await reader.readexactly(length)
    return status


async def _client(host: str, port: int, request: bytes, count: int, times: list[float]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        for _ in range(count):
            start = time.perf_counter()
            writer.write(request)
            status = await _read_response(reader)
            times.append(time.perf_counter() - start)
            if status != 200:
                raise RuntimeError(f"GET returned {status}")
    finally:
        writer.close()


async def get_latencies(url: str, path: str, headers: dict[str, str], clients: int, per_client: int) -> list[float]:
    """Run `clients` connections, each sending `per_client` sequential GETs; return every latency in seconds."""
    parts = urlsplit(url)
    header_lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    request = f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\n{header_lines}\r\n".encode()
    times: list[float] = []
    # The client's own full garbage collections (this process holds the benchmark's images and imports) would stall
    # every connection at once and show up as server latency.
    gc.collect()
    gc.freeze()
    await asyncio.gather(*(_client(parts.hostname or "127.0.0.1", parts.port or 80, request, per_client, times)
                           for _ in range(clients)))
    return times
