"""A TCP proxy on loopback that can pass traffic, hang, or refuse connections.

Put in front of the encoder service (``driftrec serve-encoder``), it plays the
service's failures: ``hang`` accepts connections and reads requests but never
answers (a wedged GPU server behind a live socket), ``down`` refuses
connections (the pod is gone), ``pass`` forwards both ways.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from typing import Literal

__all__ = ["FaultProxy"]

Mode = Literal["pass", "hang", "down"]


class FaultProxy:
    """Listens on ``127.0.0.1:port`` and forwards to ``target_port`` while in ``pass`` mode."""

    def __init__(self, target_port: int, *, mode: Mode = "pass") -> None:
        self.target_port = target_port
        self.mode: Mode = mode
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        self._thread.start()
        self.set_mode(self.mode)
        return self

    def set_mode(self, mode: Mode) -> None:
        """Switch modes; leaving ``pass`` cuts the connections that are open."""
        asyncio.run_coroutine_threadsafe(self._set_mode(mode), self._loop).result(10)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.set_mode("down")
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    async def _set_mode(self, mode: Mode) -> None:
        previous, self.mode = self.mode, mode
        if mode != previous or mode == "down":
            for writer in list(self._connections):
                writer.close()
            self._connections.clear()
        if mode == "down":
            if self._server is not None:
                self._server.close()
                await self._server.wait_closed()
                self._server = None
        elif self._server is None:
            self._server = await asyncio.start_server(
                self._accept, "127.0.0.1", self.port, reuse_address=True
            )

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections.add(writer)
        try:
            if self.mode == "hang":
                while await reader.read(65536):  # take the request, never answer
                    pass
                return
            upstream_reader, upstream_writer = await asyncio.open_connection(
                "127.0.0.1", self.target_port
            )
            self._connections.add(upstream_writer)
            await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()
            self._connections.discard(writer)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()
