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
        # The stack's natsTlsSecret, from a CA made here for the in-cluster names (on a real
        # cluster cert-manager would keep it); the program writes it into each site. 97 = 89 +
        # the ops user's generated password + one TLS Secret per site + the API token (its
        # component and generated value) + one talk-api-tokens Secret per primary site.
        from twinsite import topology
        from twinsite.k8s.nats import tls_dns_names
        from twinsite.lab import pki
        topo = topology.load_stack("lab")
        material = pki.secret_data(pki.make(tmp_path / "nats-pki", ["nats"],
                                            extra_dns=tls_dns_names(topo)), "nats")
        keys = {"tls.crt": "natsTlsCert", "tls.key": "natsTlsKey", "ca.crt": "natsTlsCa"}
        ws.run("config", "set-all", "-s", "lab",
               *(a for k, v in material.items() for a in ("--secret", f"twinsite:{keys[k]}={v}")))
        up = ws.run("up", "-s", "lab", "--yes", "--skip-preview")
        assert "97 created" in up.stdout, up.stdout[-2000:]
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
            tls = api.read_namespaced_secret(topo.kubernetes.nats_tls_secret, "twinsite")
            assert tls.type == "kubernetes.io/tls" and set(tls.data) == set(keys)
            for p in pods:  # every NATS server and client mounts that Secret (clients: the CA)
                assert topo.kubernetes.nats_tls_secret in {
                    v.secret.secret_name for v in p.spec.volumes if v.secret}, p.metadata.name
        again = ws.run("preview", "-s", "lab", "--expect-no-changes")
        assert "97 unchanged" in again.stdout, again.stdout[-2000:]
    finally:
        ws.run("destroy", "-s", "lab", "--yes", check=False)
    for site in sandbox.contexts:
        api = core(sandbox, site)
        assert "twinsite" not in [n.metadata.name for n in api.list_namespace().items
                                  if n.status.phase != "Terminating"]
        assert api.list_pod_for_all_namespaces(
            label_selector="app.kubernetes.io/part-of=twinsite").items == []
