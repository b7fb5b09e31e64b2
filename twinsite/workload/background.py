"""Traffic in the background of synchronous code (chaostoolkit controls and actions).

`BackgroundTraffic` runs a `TrafficDriver` on its own event loop in a daemon thread; whoever holds it
(the chaos run context) puts fault markers into the same history with the same clock.
"""

from __future__ import annotations

import asyncio
import threading

from ..history import HistoryWriter
from .driver import DriverConfig, TrafficDriver

def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
        return uvloop.new_event_loop()
    except ImportError:  # uvloop is optional: plain asyncio works, just slower
        return asyncio.new_event_loop()


class BackgroundTraffic:
    def __init__(self, config: DriverConfig, history_path):
        config.validate()  # bad config fails here, in the caller's thread, not in the loop thread
        self.config = config
        self.history_path = history_path
        self.history: HistoryWriter | None = None
        self.driver: TrafficDriver | None = None
        self.error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("this BackgroundTraffic was already started")
        self.history = HistoryWriter(self.history_path, keep=True)
        self.driver = TrafficDriver(self.config, self.history)
        self._thread = threading.Thread(target=self._main, name="twinsite-traffic", daemon=True)
        self._thread.start()
        self._started.wait(10)

    def _main(self) -> None:
        loop = self._loop = _new_loop()
        asyncio.set_event_loop(loop)
        self._started.set()
        try:
            loop.run_until_complete(self.driver.run(None))
        except BaseException as e:  # noqa: BLE001 - reported by stop() in the caller's thread
            self.error = e
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()

    def mark_fault(self, name: str, phase: str) -> None:
        if self.history is not None:
            self.history.fault(name, phase)

    def mark_leaders(self, rooms: dict) -> None:
        """{"type": "leaders", "rooms": {room: site}}: which site led each room's shard just before
        a fault (the checker splits per-room stalls by it; null = no leader at that moment)."""
        if self.history is not None:
            self.history.write({"type": "leaders", "rooms": {str(k): v for k, v in rooms.items()}})

    def stop(self) -> None:
        """Stop sending, settle, read every room back, close the history. Idempotent."""
        if self._thread is None:
            return
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self.driver.request_stop)
            except RuntimeError:  # the loop already finished (the driver crashed)
                pass
        c = self.config
        self._thread.join(timeout=c.message_deadline_s + 5 + c.settle_s + 2 * c.final_read_timeout_s)
        self.history.close()
        if self._thread.is_alive():
            raise RuntimeError("traffic driver did not stop in time")
        if self.error is not None:
            raise RuntimeError(f"traffic driver failed: {self.error!r}") from self.error

    @property
    def stats(self) -> dict:
        return self.driver.stats.as_dict() if self.driver else {}

    def events(self) -> list[dict]:
        """A snapshot of the history so far (the whole run once stopped)."""
        return self.history.events() if self.history is not None else []

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
