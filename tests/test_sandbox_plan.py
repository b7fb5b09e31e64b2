"""The sandbox's pure parts (no Go needed): the plan per site, node bodies, the CRD, the PKI."""

from __future__ import annotations

import ssl
from pathlib import Path

from cryptography import x509

from twinsite import topology
from twinsite.sandbox import chaosmesh, pki, plan, tools

ROOT = Path(__file__).resolve().parent.parent


def test_plan_has_one_control_plane_per_site_with_its_context_and_zone_nodes():
    topo = topology.load_stack("lab", root=ROOT)
    sites = plan.plan(topo, list(range(10000, 10000 + 6 * len(topo.sites))), per_zone=2)
    assert [s.site for s in sites] == [s.name for s in topo.sites]
    assert [s.context for s in sites] == [s.kube_context for s in topo.sites]
    pangyo = sites[0]
    assert pangyo.nodes[:2] == ("pangyo-a-node-1", "pangyo-a-node-2")
    assert len(pangyo.nodes) == 2 * len(pangyo.zones)
    ports = [p for s in sites for p in vars(s.ports).values()]
    assert len(set(ports)) == len(ports)
    body = plan.node_body("pangyo-b-node-1", plan.zone_of_node(pangyo, "pangyo-b-node-1"), "pangyo")
    assert body["metadata"]["labels"][plan.ZONE_LABEL] == "pangyo-b"
    assert body["metadata"]["labels"][plan.REGION_LABEL] == "pangyo"
    assert body["metadata"]["annotations"][plan.KWOK_ANNOTATION] == "fake"
    vols = plan.volume_bodies(pangyo)
    assert len(vols) == plan.VOLUMES_PER_NODE * len(pangyo.nodes)
    v = vols[-1]
    assert v["metadata"]["labels"][plan.ZONE_LABEL] == "pangyo-c"
    term = v["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]
    assert term["matchExpressions"][0]["values"] == [pangyo.nodes[-1]]
    assert plan.storage_class_body()["volumeBindingMode"] == "WaitForFirstConsumer"


def test_network_chaos_crd_names_the_documented_fields():
    crd = chaosmesh.network_chaos_crd()
    assert crd["metadata"]["name"] == "networkchaos.chaos-mesh.org"
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    props = spec["properties"]
    for field in ("action", "mode", "value", "selector", "direction", "externalTargets",
                  "delay", "bandwidth", "duration", "target"):
        assert field in props
    assert set(props["delay"]["properties"]) >= {"latency", "jitter", "correlation"}
    assert set(props["bandwidth"]["required"]) == {"rate", "limit", "buffer"}
    assert {"partition", "delay", "bandwidth"} <= set(props["action"]["enum"])
    assert props["direction"]["enum"] == ["to", "from", "both"]


def test_site_pki_serving_cert_covers_loopback_and_admin_is_a_master(tmp_path):
    k = pki.make_site_pki(tmp_path, "pangyo")
    srv = x509.load_pem_x509_certificate(Path(k.apiserver_crt).read_bytes())
    sans = srv.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "127.0.0.1" in {str(i) for i in sans.get_values_for_type(x509.IPAddress)}
    adm = x509.load_pem_x509_certificate(Path(k.admin_crt).read_bytes())
    assert "O=system:masters" in adm.subject.rfc4514_string()
    ctx = ssl.create_default_context(cafile=k.ca_crt)  # the CA loads as a trust anchor
    ctx.load_cert_chain(k.admin_crt, k.admin_key)


def test_tool_cache_key_follows_the_pins(tmp_path):
    (tmp_path / "go.mod").write_text("require k8s.io/kubernetes v1.36.3\n")
    (tmp_path / "go.sum").write_text("go.sum v1\n")
    a = tools.cache_key(tmp_path)
    assert "gitVersion=v1.36.3" in tools.ldflags(tmp_path)
    (tmp_path / "go.sum").write_text("go.sum v2\n")
    assert tools.cache_key(tmp_path) != a
    assert tools.cache_key() == tools.cache_key(tools.module_dir())
