"""The Kubernetes driver's pure half: effect + cluster views -> API operations, and the Chaos Mesh
bodies it writes. The same plans run against real API servers in tests/test_k8s_driver.py."""

from __future__ import annotations

import pytest

from twinsite import faults as F
from twinsite.chaos.drivers.k8s import chaosmesh as cm
from twinsite.chaos.drivers.k8s.plan import Chaos, Node, Pod, PlanError, SiteView, Verb, plan
from twinsite.topology import LinkSpec, load_stack

TOPO = load_stack("lab")
RUN = "run-1"


def views(**addresses) -> dict[str, SiteView]:
    out = {}
    for site in TOPO.sites:
        nodes = tuple(Node(f"{z}-{i}", z) for z in site.zone_names for i in (1, 2))
        pods = tuple(Pod(f"nats-{z}-0", f"{z}-1") for z in site.zone_names)
        out[site.name] = SiteView(site.name, "twinsite", nodes, pods,
                                  addresses=tuple(addresses.get(site.name, ())))
    return out


def by_verb(ops, verb):
    return [op for op in ops if op.verb is verb]


def test_zone_power_loss_is_silent_first_then_cordon_taint_and_force_delete():
    ops = plan(F.resolve(F.ZoneOutage("pangyo-a"), TOPO), TOPO, views(ansan=["10.2.0.0/16"]), RUN)
    verbs = [op.verb for op in ops]
    assert verbs.index(Verb.CREATE_CHAOS) < verbs.index(Verb.CORDON) < verbs.index(Verb.DELETE_POD)
    assert {op.site for op in ops} == {"pangyo"}
    assert [op.name for op in by_verb(ops, Verb.CORDON)] == ["pangyo-a-1", "pangyo-a-2"]
    assert [op.name for op in by_verb(ops, Verb.TAINT)] == ["pangyo-a-1", "pangyo-a-2"]
    assert [op.name for op in by_verb(ops, Verb.DELETE_POD)] == ["nats-pangyo-a-0"]
    peers, wan = (op.body for op in by_verb(ops, Verb.CREATE_CHAOS))
    assert peers["spec"]["action"] == "partition" and peers["spec"]["direction"] == "both"
    assert peers["spec"]["selector"]["nodeSelectors"] == {cm.ZONE_KEY: "pangyo-a"}
    assert peers["metadata"]["labels"][cm.RUN_LABEL] == RUN
    assert wan["spec"]["direction"] == "to" and wan["spec"]["externalTargets"] == ["10.2.0.0/16"]


def test_a_node_already_cordoned_is_not_cordoned_again_and_so_not_uncordoned_by_us():
    v = views()
    p = v["pangyo"]
    nodes = tuple(Node(n.name, n.zone, unschedulable=n.name == "pangyo-a-2") for n in p.nodes)
    v["pangyo"] = SiteView("pangyo", "twinsite", nodes, p.pods)
    ops = plan(F.resolve(F.ZoneOutage("pangyo-a"), TOPO), TOPO, v, RUN)
    assert [op.name for op in by_verb(ops, Verb.CORDON)] == ["pangyo-a-1"]


def test_zone_crash_only_deletes_pods():
    ops = plan(F.resolve(F.ZoneOutage("ansan-b", mode="crash"), TOPO), TOPO, views(), RUN)
    assert [(op.verb, op.name) for op in ops] == [(Verb.DELETE_POD, "nats-ansan-b-0")]


def test_site_power_loss_is_every_zone_of_the_site():
    ops = plan(F.resolve(F.SitePowerLoss("pangyo"), TOPO), TOPO, views(), RUN)
    assert len(by_verb(ops, Verb.TAINT)) == 6 and len(by_verb(ops, Verb.DELETE_POD)) == 3
    grid = plan(F.resolve(F.SitePowerLoss("all"), TOPO), TOPO, views(), RUN)
    assert {op.site for op in grid} == {"pangyo", "ansan", "witness"}


def test_a_link_fault_between_sites_creates_one_object_in_each_cluster():
    shape = F.resolve(F.LinkShape("pangyo", "ansan", 80, jitter_ms=5, bandwidth_kbit=800), TOPO)
    ops = plan(shape, TOPO, views(pangyo=["10.1.0.0/16"], ansan=["10.2.0.0/16"]), RUN)
    assert [(op.verb, op.site) for op in ops] == [(Verb.CREATE_CHAOS, "ansan"),
                                                  (Verb.CREATE_CHAOS, "pangyo")]
    ansan, pangyo = (op.body["spec"] for op in ops)
    assert ansan["externalTargets"] == ["10.1.0.0/16"] and pangyo["externalTargets"] == ["10.2.0.0/16"]
    assert pangyo["action"] == "delay" and pangyo["direction"] == "to"
    assert pangyo["delay"] == {"latency": "80ms", "jitter": "5ms", "correlation": "0"}
    assert pangyo["bandwidth"] == {"rate": "100000bps", "limit": cm.LIMIT_BYTES, "buffer": 10000}
    assert "nodeSelectors" not in pangyo["selector"]  # the whole site: every zone's pods


def test_a_partition_names_its_links_so_heal_can_find_them():
    cut = F.resolve(F.LinkPartition("pangyo-b", "witness"), TOPO)
    ops = plan(cut, TOPO, views(pangyo=["10.1.0.9"], witness=["10.3.0.9"]), RUN)
    pangyo = next(op.body for op in ops if op.site == "pangyo")
    assert pangyo["spec"]["action"] == "partition"
    assert pangyo["spec"]["selector"]["nodeSelectors"] == {cm.ZONE_KEY: "pangyo-b"}
    assert pangyo["metadata"]["annotations"][cm.LINKS_ANN] == "pangyo-b~witness-a"


def test_a_link_fault_inside_a_site_targets_the_other_zones_pods():
    ops = plan(F.resolve(F.LinkPartition("ansan-a", "ansan-c"), TOPO), TOPO, views(), RUN)
    (op,) = ops
    assert op.site == "ansan" and op.body["spec"]["direction"] == "both"
    assert op.body["spec"]["target"]["selector"]["nodeSelectors"] == {cm.ZONE_KEY: "ansan-c"}


def test_a_link_fault_without_any_address_of_the_other_site_is_one_clear_line():
    with pytest.raises(PlanError, match="link ansan<->pangyo: no address of site pangyo is known"):
        plan(F.resolve(F.LinkPartition("pangyo", "ansan"), TOPO), TOPO, views(ansan=["x"]), RUN)


def test_a_zone_without_nodes_is_one_clear_line():
    v = views()
    v["witness"] = SiteView("witness", "twinsite")
    with pytest.raises(PlanError, match="site witness: no node labelled .*=witness-a"):
        plan(F.resolve(F.ZoneOutage("witness-a"), TOPO), TOPO, v, RUN)


def test_restore_undoes_exactly_what_this_run_did():
    v = views()
    p = v["pangyo"]
    nodes = (Node("pangyo-a-1", "pangyo-a", True, cordoned_by=RUN, tainted_by=RUN),
             Node("pangyo-a-2", "pangyo-a", True, cordoned_by=None, tainted_by=RUN),
             Node("pangyo-b-1", "pangyo-b", True, cordoned_by="other", tainted_by="other"))
    chaos = (Chaos("mine", RUN, "zone-power", "pangyo-a"),
             Chaos("theirs", "other", "zone-power", "pangyo-a"),
             Chaos("mylink", RUN, "link", None, ("ansan-a~pangyo-a",)))
    v["pangyo"] = SiteView("pangyo", "twinsite", nodes, p.pods, chaos)
    ops = plan(F.resolve(F.Restore("pangyo"), TOPO), TOPO, v, RUN)
    assert [(op.verb, op.name) for op in ops] == [
        (Verb.DELETE_CHAOS, "mine"), (Verb.UNTAINT, "pangyo-a-1"), (Verb.UNCORDON, "pangyo-a-1"),
        (Verb.UNTAINT, "pangyo-a-2"), (Verb.WAIT_READY, "twinsite")]
    every = plan(F.resolve(F.Restore("all"), TOPO), TOPO, v, RUN)
    assert (Verb.DELETE_CHAOS, "mylink") in [(op.verb, op.name) for op in every]
    assert {op.site for op in by_verb(every, Verb.WAIT_READY)} == {"pangyo", "ansan", "witness"}


def test_heal_deletes_only_the_link_objects_it_covers():
    v = views()
    p = v["pangyo"]
    chaos = (Chaos("a", RUN, "link", None, ("ansan-a~pangyo-a",)),
             Chaos("b", RUN, "link", None, ("pangyo-a~witness-a",)),
             Chaos("z", RUN, "zone-power", "pangyo-a"))
    v["pangyo"] = SiteView("pangyo", "twinsite", p.nodes, p.pods, chaos)
    ops = plan(F.resolve(F.Heal("pangyo", "ansan"), TOPO), TOPO, v, RUN)
    assert [op.name for op in ops] == ["a"]
    assert [op.name for op in plan(F.resolve(F.Heal(), TOPO), TOPO, v, RUN)] == ["a", "b"]


def test_object_names_are_dns_labels_unique_per_run():
    a = cm.object_name("run-1", "power", "pangyo-a")
    b = cm.object_name("run-2", "power", "pangyo-a")
    long = cm.object_name("r" * 63, "link", "pangyo", "ansan", "ansan-a~pangyo-a" * 4)
    import re
    for name in (a, b, long):
        assert len(name) <= 63 and re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name), name
    assert a != b


def test_bandwidth_only_shapes_use_the_bandwidth_action():
    body = cm.network_chaos("x", "ns", RUN, "link", selector=cm.pods("ns"), direction="to",
                            external=("1.2.3.4",), shape=LinkSpec(0, 0, 8))
    assert body["spec"]["action"] == "bandwidth" and "delay" not in body["spec"]
    assert body["spec"]["bandwidth"]["rate"] == "1000bps"
    assert body["metadata"]["namespace"] == "ns" and "ns" not in body["metadata"].get("ns", "x")
