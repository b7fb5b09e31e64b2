"""`pulumi up` of the dual-site program onto the sandbox's real API servers, with the real engine:
every resource created in its site's cluster, NATS pods on nodes of their own zone, a second
preview with no change, and `pulumi destroy` leaving nothing of twinsite behind."""

from __future__ import annotations

import pytest
from kubernetes import client, config

from test_pulumi_engine import Workspace, tools, twinsite_project  # noqa: F401 - the fixture

sandbox_testing = pytest.importorskip("twinsite.sandbox.testing")
pytestmark = pytest.mark.timeout(1800)


@pytest.fixture(scope="module")
def sandbox():
    from twinsite.sandbox import client as sandbox_client
    sb = sandbox_testing.start("lab")  # its own: `up` must not meet another test's objects
    try:
        yield sb
    finally:
        sandbox_client.down(sb.state_dir)


def core(sandbox, site: str) -> client.CoreV1Api:
    return client.CoreV1Api(config.new_client_from_config(config_file=str(sandbox.kubeconfig),
                                                          context=sandbox.contexts[site]))


def test_pulumi_up_preview_destroy_on_the_sandbox(tools, sandbox, tmp_path):  # noqa: F811
    ws = Workspace(tools, tmp_path, twinsite_project(tmp_path / "project"))
    ws.env["KUBECONFIG"] = str(sandbox.kubeconfig)
    try:
        ws.run("stack", "init", "lab")
        up = ws.run("up", "-s", "lab", "--yes", "--skip-preview")
        assert "89 created" in up.stdout, up.stdout[-2000:]
        for site in sandbox.contexts:
            api = core(sandbox, site)
            zone = {n.metadata.name: n.metadata.labels["topology.kubernetes.io/zone"]
                    for n in api.list_node().items}
            pods = api.list_namespaced_pod("twinsite").items
            assert pods and all(p.status.phase == "Running" for p in pods), site
            for p in pods:
                if p.metadata.name.startswith("nats-"):  # nats-<zone>-0 on a node of <zone>
                    assert p.metadata.name == f"nats-{zone[p.spec.node_name]}-0"
            gateways = [p for p in pods if p.metadata.name.startswith("talk-gateway")]
            assert bool(gateways) == (site != "witness")
        again = ws.run("preview", "-s", "lab", "--expect-no-changes")
        assert "89 unchanged" in again.stdout, again.stdout[-2000:]
    finally:
        ws.run("destroy", "-s", "lab", "--yes", check=False)
    for site in sandbox.contexts:
        api = core(sandbox, site)
        assert "twinsite" not in [n.metadata.name for n in api.list_namespace().items
                                  if n.status.phase != "Terminating"]
        assert api.list_pod_for_all_namespaces(
            label_selector="app.kubernetes.io/part-of=twinsite").items == []
