"""The twinsite program and policy pack under the real Pulumi engine (no mocks).

The CLI, the kubernetes provider and the language host come from `twinsite.sandbox.pulumi_tools`
(built from Go modules on first use; skipped with one line when there is no Go toolchain, a
failure under CI=true). The state is a file backend in a temporary directory; the project files
are copied there so that `pulumi stack init` writes its salt into the copies, never the repo.
No cluster is needed: every site's kube context points at a closed loopback port, and the
kubernetes provider previews against an unreachable cluster (it says so and plans creates).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from twinsite import policycheck, topology
from twinsite.k8s import mockrun
from twinsite.sandbox import pulumi_tools

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
pytestmark = pytest.mark.timeout(1800)  # a cold build of the tools takes minutes


@pytest.fixture(scope="module")
def tools() -> pulumi_tools.Tools:
    found = pulumi_tools.locate()
    if found is not None:
        return found
    if pulumi_tools.go_binary() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("no Go toolchain: the Pulumi engine tests need it on CI")
        pytest.skip("no Go toolchain: install Go, then `make pulumi-tools`, to run these tests")
    try:
        return pulumi_tools.build(progress=lambda line: print(line, file=sys.stderr))
    except pulumi_tools.ToolsError as e:
        pytest.fail(f"pulumi tools: {e}")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kubeconfig(path: Path, contexts: list[str]) -> Path:
    server = f"https://127.0.0.1:{closed_port()}"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": contexts[0],
        "clusters": [{"name": c, "cluster": {"server": server}} for c in contexts],
        "users": [{"name": c, "user": {"token": "none"}} for c in contexts],
        "contexts": [{"name": c, "context": {"cluster": c, "user": c}} for c in contexts]}))
    return path


class Workspace:
    """A project directory + file backend + env for one module's worth of pulumi runs."""

    def __init__(self, tools: pulumi_tools.Tools, base: Path, project: Path):
        self.dir = project
        (base / "state").mkdir()
        (base / "home").mkdir()
        self.env = tools.env()
        self.env.update({
            "PULUMI_BACKEND_URL": f"file://{base / 'state'}",
            "PULUMI_CONFIG_PASSPHRASE": "twinsite-test",
            "PULUMI_HOME": str(base / "home"),
            "KUBECONFIG": str(kubeconfig(base / "kubeconfig", ["pangyo", "ansan", "witness"])),
            "PULUMI_ENABLE_STREAMING_JSON_PREVIEW": "true",
        })
        self.env.pop("PULUMI_ACCESS_TOKEN", None)
        self.pulumi = str(tools.pulumi)

    def run(self, *args: str, check: bool = True, timeout: float = 600):
        proc = subprocess.run([self.pulumi, *args, "--non-interactive"], cwd=self.dir,
                              env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"pulumi {' '.join(args)} exited {proc.returncode}:\n"
                                 f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        return proc

    def events(self, *args: str, check: bool = True) -> tuple[subprocess.CompletedProcess, list]:
        """Run with `--json`: the engine's events, one JSON object a line (streamed)."""
        proc = self.run(*args, "--json", check=check)
        return proc, [json.loads(ln) for ln in proc.stdout.splitlines() if ln.startswith("{")]


def twinsite_project(dest: Path) -> Path:
    dest.mkdir()
    for f in ("Pulumi.yaml", "Pulumi.lab.yaml", "Pulumi.fragile.yaml"):
        shutil.copy(ROOT / f, dest / f)
    shutil.copytree(ROOT / "infra", dest / "infra")
    (dest / ".venv").symlink_to(Path(sys.prefix))  # Pulumi.yaml: virtualenv .venv
    return dest


@pytest.fixture(scope="module")
def ws(tools, tmp_path_factory) -> Workspace:
    base = tmp_path_factory.mktemp("pulumi-engine")
    w = Workspace(tools, base, twinsite_project(base / "project"))
    for stack in ("lab", "fragile"):
        w.run("stack", "init", stack)
    return w


def planned(events: list) -> set[tuple[str, str]]:
    """(type, name) of every resource the engine planned, less the stack and default providers."""
    out = set()
    for e in events:
        meta = e.get("resourcePreEvent", {}).get("metadata")
        if not meta:
            continue
        name = meta["urn"].rsplit("::", 1)[-1]
        if meta["type"] == "pulumi:pulumi:Stack" or name.startswith("default"):
            continue
        out.add((meta["type"], name))
    return out


def policy_findings(events: list) -> set[tuple[str, str, str, str]]:
    """(rule, level, resource name or "stack", message) of every violation the engine reported
    (it files stack-level findings under the stack resource, and prefixes the description)."""
    out = set()
    for e in events:
        if p := e.get("policyEvent"):
            urn = p.get("resourceUrn") or ""
            name = urn.rsplit("::", 1)[-1] if urn and "::pulumi:pulumi:Stack::" not in urn else "stack"
            message = p["message"].strip().split("\n", 1)[-1]  # after the policy's description
            out.add((p["policyName"], p["enforcementLevel"], name, message))
    return out


def offline_findings(stack: str) -> set[tuple[str, str, str, str]]:
    topo = topology.load_stack(stack, root=ROOT)
    return {(v.rule, v.enforcement, v.urn.rsplit("::", 1)[-1] if v.urn else "stack", v.message)
            for v in policycheck.evaluate(topo)}


def test_cli_and_language_host_are_the_pinned_versions(ws):
    assert ws.run("version").stdout.strip() == f"v{pulumi_tools.PULUMI_VERSION}"
    info = json.loads(ws.run("about", "--json", "-s", "lab").stdout)
    assert info["cliAbout"]["version"] == pulumi_tools.PULUMI_VERSION
    assert info["runtime"]["language"] == "python"
    assert info["runtime"]["executable"] == str(ws.dir / ".venv" / "bin" / "python")
    plugins = {(p["kind"], p["name"], p["version"]) for p in info["plugins"]}
    assert plugins == {("resource", "kubernetes", pulumi_tools.K8S_VERSION),
                       ("language", "python", pulumi_tools.PULUMI_VERSION)}


def test_preview_of_lab_plans_what_the_mocks_register(ws):
    proc, events = ws.events("preview", "-s", "lab")
    engine = planned(events)
    mocked = {(r.type, r.name) for r in mockrun.run(topology.load_stack("lab", root=ROOT))}
    assert engine == mocked, (sorted(engine ^ mocked), proc.stdout[-2000:])
    ops = {e["resourcePreEvent"]["metadata"]["op"] for e in events if "resourcePreEvent" in e}
    assert ops <= {"create", "same"}, ops


def test_policy_pack_passes_lab(ws):
    proc, events = ws.events("preview", "-s", "lab", "--policy-pack", str(ROOT / "policies"))
    assert not [f for f in policy_findings(events) if f[1] == "mandatory"], proc.stdout[-3000:]
    assert policy_findings(events) == offline_findings("lab")


def test_policy_pack_rejects_fragile_like_the_offline_check(ws):
    proc, events = ws.events("preview", "-s", "fragile", "--policy-pack", str(ROOT / "policies"),
                             check=False)
    assert proc.returncode != 0
    found = policy_findings(events)
    mandatory = {rule for rule, level, _, _ in found if level == "mandatory"}
    assert {"tiebreaker-quorum", "stream-replicas"} <= mandatory, found
    assert found == offline_findings("fragile")


@pytest.fixture
def password_ws(tools, tmp_path) -> Workspace:
    project = tmp_path / "project"
    shutil.copytree(FIXTURES / "pulumi-password", project)
    (project / ".venv").symlink_to(Path(sys.prefix))
    w = Workspace(tools, tmp_path, project)
    w.run("stack", "init", "dev")
    return w


def test_generated_password_is_created_once_and_kept_secret(password_ws):
    w = password_ws
    w.run("up", "--yes", "-s", "dev")
    first = json.loads(w.run("stack", "output", "--json", "--show-secrets").stdout)["password"]
    assert len(first) == 24 and first.isalnum()
    assert "[secret]" in w.run("stack", "output", "password").stdout
    state = "".join(p.read_text() for p in (w.dir.parent / "state").rglob("*.json"))
    assert "ciphertext" in state and first not in state  # encrypted at rest
    _, events = w.events("up", "--yes", "-s", "dev")
    ops = {e["resourcePreEvent"]["metadata"]["op"] for e in events if "resourcePreEvent" in e}
    assert ops == {"same"}, ops
    again = json.loads(w.run("stack", "output", "--json", "--show-secrets").stdout)["password"]
    assert again == first
    w.run("config", "set", "length", "16")
    w.run("up", "--yes", "-s", "dev")
    third = json.loads(w.run("stack", "output", "--json", "--show-secrets").stdout)["password"]
    assert len(third) == 16 and third != first  # a new length replaces it
    w.run("destroy", "--yes", "-s", "dev")


def test_missing_virtualenv_is_one_clear_line(password_ws):
    w = password_ws
    (w.dir / ".venv").unlink()
    proc = w.run("preview", "-s", "dev", check=False)
    assert proc.returncode != 0
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "has no bin/python" in ln]
    assert len(lines) == 1 and str(w.dir / ".venv") in lines[0], proc.stdout + proc.stderr
