"""Fault drivers: the same fault vocabulary realized on different targets.

The chaostoolkit configuration key `target` picks one (`lab`, the default). Drivers share no code:
the lab driver speaks to the lab supervisor, a future k8s driver would taint nodes and delete pods.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Mapping, Protocol

from chaoslib.exceptions import ActivityFailed

if TYPE_CHECKING:
    from twinsite.faults import Effect
    from twinsite.topology import Topology

TARGETS = ("lab", "k8s")


class Driver(Protocol):
    """Realises `twinsite.faults` effects on one target and says what it did."""

    def topology(self) -> "Topology": ...
    def apply(self, effect: "Effect") -> dict: ...
    def endpoints(self) -> dict[str, list[str]]: ...  # site -> gateway base URLs, for traffic
    def api_token(self) -> str: ...  # the gateways' bearer token, for traffic (talk.auth)
    def stream_leader(self, stream: str) -> str: ...  # the zone whose server leads the stream
    def move_stream_leader(self, site: str, stream: str) -> dict: ...
    def shard_leaders(self) -> dict[str, str | None]: ...  # shard stream -> leader's site or None
    def healthy(self) -> bool: ...


def config_value(configuration: Mapping[str, Any] | None, key: str, env: str,
                 default: Any = None) -> Any:
    """A configuration key, else an environment variable, else the default ("" counts as unset)."""
    value = (configuration or {}).get(key)
    if value in (None, ""):
        value = os.environ.get(env) or default
    return value


def get_driver(configuration: Mapping[str, Any] | None = None,
               secrets: Mapping[str, Any] | None = None) -> Driver:
    target = config_value(configuration, "target", "TWINSITE_TARGET", "lab")
    if target == "lab":
        from .lab import LabDriver  # imported here: a k8s run must not need the lab's modules
        return LabDriver(state_dir=config_value(configuration, "state_dir", "TWINSITE_LAB_DIR"))
    if target == "k8s":
        from .k8s import K8sDriver  # the kubernetes client only where it is used
        return K8sDriver(configuration, secrets)
    raise ActivityFailed(f"unknown target {target!r} (expected one of: {', '.join(TARGETS)})")
