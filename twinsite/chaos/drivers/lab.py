"""The lab driver: effects realised by the local lab's supervisor (`twinsite.lab.LabClient`).

The supervisor resolves the same fault against the same topology (`twinsite.faults`), so the effect
is sent as its fault, serialised once; the supervisor's answer (processes killed, links silenced,
shaped or cut, servers started) is what the action returns.
"""

from __future__ import annotations

from chaoslib.exceptions import ActivityFailed

from twinsite import faults
from twinsite.topology import Topology, TopologyError, load_stack


class LabDriver:
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

    def topology(self) -> Topology:
        stack = self.status().get("stack")
        try:
            return load_stack(stack)
        except TopologyError as e:
            raise ActivityFailed(f"the lab runs stack {stack!r}, which does not load: {e}") \
                from None

    def endpoints(self) -> dict[str, list[str]]:
        from twinsite.workload import endpoints_from_lab
        return endpoints_from_lab(self.status())

    def api_token(self) -> str:
        """The token the lab generated for its gateways (a 0600 file in its state dir)."""
        from twinsite.talk.auth import TokenError
        from twinsite.workload import token_from_lab
        try:
            return token_from_lab(self.status())
        except TokenError as e:
            raise ActivityFailed(f"the lab's API token: {e}") from None

    # --- faults ----------------------------------------------------------------------------------

    def apply(self, effect: faults.Effect) -> dict:
        answer = self._call(effect.fault.KIND, self.client.apply, effect.fault)
        return {k: v for k, v in answer.items() if k not in ("ok", "effect")}

    # --- where the stream leader is ---------------------------------------------------------------

    def _nats_urls(self) -> list[str]:
        return [n["url"] for n in self.status().get("nodes", [])
                if n.get("kind") == "nats" and n.get("state") == "up" and n.get("url")]

    def _nats_auth(self):
        """The lab's operations user, over TLS (`lab status` names its password file and CA)."""
        from twinsite.lab.credentials import client_auth
        try:
            return client_auth(self.status())
        except (KeyError, OSError, ValueError) as e:
            raise ActivityFailed(f"lab NATS credentials: {e}") from None

    def stream_leader(self, stream: str) -> str:
        from .jetstream import JetStreamError, stream_placement
        try:
            leader = stream_placement(self._nats_urls(), stream,
                                      auth=self._nats_auth()).get("leader")
        except (JetStreamError, OSError, Exception) as e:  # noqa: BLE001 - nats-py's errors vary
            raise ActivityFailed(f"stream {stream}: no leader known ({e or type(e).__name__})") \
                from None
        if not leader:
            raise ActivityFailed(f"stream {stream} has no leader right now")
        return leader

    def move_stream_leader(self, site: str, stream: str) -> dict:
        from .jetstream import JetStreamError, move_leader
        topo = self.topology()
        if site not in {s.name for s in topo.sites}:
            raise ActivityFailed(f"unknown site '{site}' (valid: {faults.valid_sites(topo)})")
        try:
            leader = move_leader(self._nats_urls(), stream, list(topo.site(site).zone_names),
                                 auth=self._nats_auth())
        except JetStreamError as e:
            raise ActivityFailed(str(e)) from None
        except Exception as e:  # noqa: BLE001 - nats-py's errors vary
            raise ActivityFailed(f"moving the {stream} leader: {e or type(e).__name__}") from None
        return {"stream": stream, "leader": leader, "site": site}

    def shard_leaders(self) -> dict[str, str | None]:
        """Each shard stream -> the site of its leader (None during an election)."""
        st = self._call("lab status", self.client.status, shards=True)
        return {name: sh.get("site") for name, sh in (st.get("shards") or {}).items()}

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
