"""The lab driver: faults on the local lab through its supervisor (`twinsite.lab.LabClient`).

Arguments are checked against the running lab's own status (its sites, zones and links), so a
typo in an experiment fails with one line naming the bad value instead of a supervisor error.
"""

from __future__ import annotations

from chaoslib.exceptions import ActivityFailed

MODES = ("power", "crash")  # silent power loss | kill -9 (the kernel answers with resets)


class LabDriver:
    """Names (sites, zones, link ends) are checked by the lab itself, which knows the topology;
    its LabError becomes the activity's failure. Only argument types are checked here."""

    def __init__(self, state_dir: str | None = None):
        self.state_dir = state_dir or None
        self._client = None

    # --- plumbing --------------------------------------------------------------------------------

    @property
    def client(self):
        if self._client is None:
            from twinsite.lab import LabClient, is_running
            if not is_running(self.state_dir):
                raise ActivityFailed("the lab is not running: start it with `twinsite lab up` "
                                     "(or let `twinsite drill` do it)")
            self._client = LabClient(self.state_dir)
        return self._client

    def _call(self, what: str, fn, *args, **kwargs):
        from twinsite.lab import LabError
        try:
            return fn(*args, **kwargs)
        except LabError as e:
            raise ActivityFailed(f"{what}: {e}") from None

    def status(self) -> dict:
        return self._call("lab status", self.client.status)

    # --- faults ----------------------------------------------------------------------------------

    def kill_zone(self, zone: str, mode: str = "power") -> dict:
        if mode not in MODES:
            raise ActivityFailed(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        self._call(f"kill_zone {zone}", self.client.kill_zone, zone, mode=mode)
        return {"zone": zone, "mode": mode}

    def cut_power(self, site: str) -> dict:
        self._call(f"cut_power {site}", self.client.cut_power, site)
        return {"site": site}

    def restore(self, target: str) -> dict:
        if target == "all":
            st = self.status()
            down = sorted({z for z, state in (st.get("zones") or {}).items() if state != "up"} |
                          {n["zone"] for n in st.get("nodes", [])
                           if n.get("zone") and n.get("state") != "up"})
            for zone in down:
                self._call(f"restore {zone}", self.client.restore, zone)
            self._call("heal links", self.client.heal)
            return {"restored": down}
        self._call(f"restore {target}", self.client.restore, target)
        return {"restored": [target]}

    def throttle_link(self, a: str, b: str, latency_ms: float, bandwidth_kbit: int | None = None,
                      jitter_ms: float = 0) -> dict:
        _check_number("latency_ms", latency_ms)
        _check_number("jitter_ms", jitter_ms)
        if bandwidth_kbit is not None:
            _check_number("bandwidth_kbit", bandwidth_kbit, minimum=1)
        self._call(f"throttle {a}<->{b}", self.client.throttle, a, b, latency_ms,
                   bandwidth_kbit=bandwidth_kbit, jitter_ms=jitter_ms)
        return {"a": a, "b": b, "latency_ms": latency_ms, "bandwidth_kbit": bandwidth_kbit,
                "jitter_ms": jitter_ms}

    def partition_link(self, a: str, b: str) -> dict:
        self._call(f"partition {a}<->{b}", self.client.partition, a, b)
        return {"a": a, "b": b}

    # --- where the stream leader is ---------------------------------------------------------------

    def _nats_urls(self) -> list[str]:
        return [n["url"] for n in self.status().get("nodes", [])
                if n.get("kind") == "nats" and n.get("state") == "up" and n.get("url")]

    def stream_leader(self, stream: str) -> str:
        from .jetstream import JetStreamError, stream_placement
        try:
            leader = stream_placement(self._nats_urls(), stream).get("leader")
        except (JetStreamError, OSError, Exception) as e:  # noqa: BLE001 - nats-py's errors vary
            raise ActivityFailed(f"stream {stream}: no leader known ({e or type(e).__name__})") \
                from None
        if not leader:
            raise ActivityFailed(f"stream {stream} has no leader right now")
        return leader

    def move_stream_leader(self, site: str, stream: str) -> dict:
        from .jetstream import JetStreamError, move_leader
        sites = {s["name"]: s["zones"] for s in self.status().get("sites", [])}
        if site not in sites:
            raise ActivityFailed(f"unknown site '{site}' (valid: {', '.join(sites)})")
        zones = sites[site]
        try:
            leader = move_leader(self._nats_urls(), stream, list(zones))
        except JetStreamError as e:
            raise ActivityFailed(str(e)) from None
        except Exception as e:  # noqa: BLE001 - nats-py's errors vary
            raise ActivityFailed(f"moving the {stream} leader: {e or type(e).__name__}") from None
        return {"stream": stream, "leader": leader, "site": site}

    def heal_links(self) -> dict:
        self._call("heal links", self.client.heal)
        return {"healed": True}

    def healthy(self) -> bool:
        """The lab is ready, every zone powered, every process up, every link as declared."""
        from twinsite.lab import is_running
        if not is_running(self.state_dir):
            return False
        st = self.status()
        return (bool(st.get("ready"))
                and all(state == "up" for state in (st.get("zones") or {}).values())
                and all(n.get("state") == "up" for n in st.get("nodes", []))
                and all(link.get("state") == "ok" for link in st.get("links", [])))


def _check_number(name: str, value, minimum: float = 0) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
        raise ActivityFailed(f"{name} must be a number >= {minimum}, got {value!r}")
