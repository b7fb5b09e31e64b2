"""What a drill runs against besides the lab: the clusters of a stack (`--target k8s`), and the
dry run that prints each experiment's plan without touching anything (`--dry-run`).

The lab is brought up and down by the drill (`cli.Lab`); clusters are not: they are there or the
drill stops with one line naming the site and the cause; so does a missing API token for the
gateways (TWINSITE_TALK_TOKEN_FILE, see docs/tokens.md). Each experiment runs with its own run id
(TWINSITE_RUN_ID), so what it created can be found and undone between experiments.
"""

from __future__ import annotations

from pathlib import Path

import yaml


class Clusters:
    """The `Lab` context's counterpart for `--target k8s`."""

    def __init__(self, stack: str, say):
        self.stack, self.say = stack, say
        self.run_id: str | None = None

    def __enter__(self):
        from chaoslib.exceptions import ActivityFailed

        from ..chaos.drivers.k8s import K8sDriver
        try:
            driver = K8sDriver({"stack": self.stack})
            clusters = driver.clusters()
            driver.api_token()  # the traffic needs the gateways' token: say so before a run
        except ActivityFailed as e:
            from .cli import DrillError
            raise DrillError(str(e)) from None
        self.say(f"clusters: {', '.join(f'{s} ({c.context})' for s, c in clusters.items())}")
        return self

    def __exit__(self, *exc):
        return None

    def env(self, run_id: str) -> dict:
        self.run_id = run_id
        return {"TWINSITE_TARGET": "k8s", "TWINSITE_RUN_ID": run_id}

    def alive(self) -> bool:
        return True

    def restore_all(self) -> None:
        """Undo whatever the last experiment's run left (its run id), wait until ready."""
        if not self.run_id:
            return
        from ..chaos import actions
        try:
            actions.restore("all", configuration={"target": "k8s", "stack": self.stack,
                                                  "run_id": self.run_id})
        except Exception as e:  # noqa: BLE001 - the next experiment's health probe says more
            self.say(f"  (restoring the clusters failed: {e})")


def dry_run(paths: list[Path], stack: str, target: str, say) -> int:
    """Every fault step of every experiment (method, then rollbacks), planned and printed."""
    from chaoslib.exceptions import ActivityFailed

    from ..chaos import actions
    cfg = {"target": target, "stack": stack, "dry_run": True}
    failed = 0
    for path in paths:
        exp = yaml.safe_load(path.read_text())
        say(f"{path.stem}:")
        for part in ("method", "rollbacks"):
            for step in exp.get(part) or []:
                prov = step.get("provider") or {}
                if prov.get("module") != "twinsite.chaos.actions":
                    continue
                try:
                    out = getattr(actions, prov["func"])(**(prov.get("arguments") or {}),
                                                         configuration=dict(cfg))
                except ActivityFailed as e:
                    failed += 1
                    say(f"  {part} {step['name']}: cannot plan: {e}")
                    continue
                say(f"  {part} {step['name']}:")
                for line in out.get("plan") or ["(nothing to do)"]:
                    say(f"    {line}")
    return 1 if failed else 0
