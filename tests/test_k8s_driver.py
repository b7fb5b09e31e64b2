"""The Kubernetes driver against real API servers: the sandbox's three control planes (etcd,
kube-apiserver, controller-manager, scheduler, kwok nodes per zone) with the lab stack's rendered
manifests applied. Assertions are on the API's state, not on calls made.

No container runs on kwok nodes, so the messaging data plane is not here: where an experiment needs
JetStream (moving a stream leader, finding the zone that leads it), the stack's `natsUrl` points
at a real local NATS cluster of the same topology (conftest's `nats_cluster`).
"""

from __future__ import annotations

import asyncio
import copy
import time
from pathlib import Path

import pytest
import yaml
from chaoslib.exceptions import ActivityFailed

from twinsite import faults, render, topology
from twinsite.chaos import actions, probes
from twinsite.chaos.drivers.k8s import K8sDriver
from twinsite.chaos.drivers.k8s import chaosmesh as cm
from twinsite.chaos.drivers.k8s.plan import CORDONED_BY, TAINT_KEY, TAINTED_BY

sandbox_testing = pytest.importorskip("twinsite.sandbox.testing")

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENTS = sorted((ROOT / "experiments").glob("*.yaml"))


# --- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sandbox():
    return sandbox_testing.shared("lab")


SHARDS = 2


@pytest.fixture(scope="module")
def talk_stream(nats_cluster):
    """The shard streams (R3, one replica per site) on a real local cluster of the lab topology,
    each led by its preferred site (as the gateways' balancer would)."""
    import nats

    from twinsite import shards
    from twinsite.chaos.drivers.jetstream import move_leader
    topo = topology.load_stack("lab")

    async def go():
        nc = await nats.connect(nats_cluster.client_urls())
        js = nc.jetstream()
        for i in range(SHARDS):
            name = shards.stream_name(i)
            try:
                await js.stream_info(name)
            except Exception:  # noqa: BLE001 - not there yet
                await js.add_stream(name=name, subjects=[f"k8s-test.{i}.>"], num_replicas=3)
        await nc.close()
    asyncio.run(go())
    for i in range(SHARDS):
        site = shards.preferred_site(i, topo)
        move_leader(nats_cluster.client_urls(), shards.stream_name(i),
                    list(topo.site(site).zone_names), timeout=30)
    return nats_cluster


@pytest.fixture(scope="module")
def stack_file(sandbox, talk_stream, tmp_path_factory):
    """The lab stack with the addresses a link fault needs (per-site CIDRs) and a natsUrl."""
    raw = yaml.safe_load((ROOT / "Pulumi.lab.yaml").read_text())
    raw["config"].setdefault("twinsite:messaging", {})["streamShards"] = SHARDS
    sites = raw["config"]["twinsite:sites"]
    for i, s in enumerate(sites):
        s["externalCidrs"] = [f"10.{i + 1}.0.0/16"]
        s["natsUrl"] = talk_stream.client_urls()[i]
    d = tmp_path_factory.mktemp("stack")
    path = d / "Pulumi.sandbox-lab.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def deployed(sandbox, stack_file):
    """The lab stack's rendered manifests created in each site's cluster, every workload ready."""
    topo = topology.load_stack("lab")
    by_site: dict[str, list[dict]] = {}
    for m in render.manifests(topo):
        by_site.setdefault(m.site, []).append(m.body)
    for site, bodies in by_site.items():
        _create_all(sandbox, site, bodies)
    driver = K8sDriver(config(stack_file, sandbox))
    for cl in driver.clusters().values():
        cl.wait_ready(120)
    return stack_file


def config(stack_file, sandbox, **extra) -> dict:
    return {"target": "k8s", "stack": str(stack_file), "kubeconfig": str(sandbox.kubeconfig),
            **extra}


def _create_all(sandbox, site: str, bodies: list[dict]) -> None:
    from kubernetes.dynamic import DynamicClient
    from kubernetes.dynamic.exceptions import ConflictError
    dyn = sandbox.api(site).dynamic()
    order = {"Namespace": 0, "Secret": 1, "ConfigMap": 1}
    for body in sorted(bodies, key=lambda b: order.get(b["kind"], 2)):
        res = dyn.resources.get(api_version=body["apiVersion"], kind=body["kind"])
        try:
            res.create(body=body, namespace=body["metadata"].get("namespace"))
        except ConflictError:
            pass


def cluster_state(driver: K8sDriver) -> dict:
    """What a run can leave behind, per site: its chaos objects, taints, cordons, pods per zone."""
    out = {}
    for site, cl in driver.clusters().items():
        nodes = cl.core.list_node().items
        chaos = cl.custom.list_namespaced_custom_object(cm.GROUP, cm.VERSION, cl.namespace,
                                                        cm.PLURAL)["items"]
        out[site] = {
            "chaos": sorted(o["metadata"]["name"] for o in chaos),
            "tainted": sorted(n.metadata.name for n in nodes
                              if any(t.key == TAINT_KEY for t in n.spec.taints or [])),
            "cordoned": sorted(n.metadata.name for n in nodes if n.spec.unschedulable),
            "marked": sorted(n.metadata.name for n in nodes
                             if {CORDONED_BY, TAINTED_BY} & set(n.metadata.annotations or {})),
            "not_ready": cl.not_ready(),
        }
    return out


def clean(state: dict) -> bool:
    return all(not any(v.values()) for v in state.values())


def running_pods_in_zone(driver: K8sDriver, site: str, zone: str) -> list[str]:
    cl = driver.clusters()[site]
    zone_nodes = {n.metadata.name for n in cl.core.list_node().items
                  if (n.metadata.labels or {}).get(cm.ZONE_KEY) == zone}
    return [p.metadata.name for p in cl.core.list_namespaced_pod(
        cl.namespace, label_selector="app.kubernetes.io/part-of=twinsite").items
        if p.spec.node_name in zone_nodes and p.status.phase == "Running"
        and not p.metadata.deletion_timestamp]


# --- faults on the API's state --------------------------------------------------------------------


def test_zone_power_loss_then_restore_leaves_nothing_behind(deployed, sandbox):
    c = config(deployed, sandbox, run_id="zone-power")
    driver = K8sDriver(c)
    assert running_pods_in_zone(driver, "pangyo", "pangyo-a")  # something to kill
    out = actions.kill_zone("pangyo-a", configuration=c)
    assert out["done"]["pods_deleted"] and out["done"]["chaos_created"]
    st = cluster_state(driver)["pangyo"]
    zone_nodes = [n for n in st["cordoned"] if n.startswith("pangyo-a")]
    assert zone_nodes and st["tainted"] == zone_nodes  # every node of the zone, no other
    assert any("power" in name for name in st["chaos"])
    assert running_pods_in_zone(driver, "pangyo", "pangyo-a") == []
    # nothing can be scheduled into the dead zone: the NATS pod of the zone stays Pending
    cl = driver.clusters()["pangyo"]
    pod = cl.core.read_namespaced_pod("nats-pangyo-a-0", cl.namespace)
    assert pod.spec.node_name is None or pod.spec.node_name not in zone_nodes
    back = actions.restore("pangyo", configuration=c)
    assert back["done"]["nodes_untainted"] and back["done"]["chaos_deleted"]
    assert clean(cluster_state(driver)), cluster_state(driver)
    assert running_pods_in_zone(driver, "pangyo", "pangyo-a")
    assert probes.lab_healthy(configuration=c) is True


def test_link_partition_creates_an_object_in_both_clusters_and_heal_removes_them(deployed,
                                                                                  sandbox):
    c = config(deployed, sandbox, run_id="link-cut")
    driver = K8sDriver(c)
    out = actions.partition_link("pangyo", "ansan", configuration=c)
    assert {n.split("/")[0] for n in out["done"]["chaos_created"]} == {"pangyo", "ansan"}
    for site, other in (("pangyo", "10.2.0.0/16"), ("ansan", "10.1.0.0/16")):
        cl = driver.clusters()[site]
        objs = cl.custom.list_namespaced_custom_object(
            cm.GROUP, cm.VERSION, cl.namespace, cm.PLURAL,
            label_selector=f"{cm.RUN_LABEL}=link-cut")["items"]
        assert len(objs) == 1 and objs[0]["spec"]["action"] == "partition"
        assert other in objs[0]["spec"]["externalTargets"]
    actions.heal_links(configuration=c)
    assert clean(cluster_state(driver))


def test_dry_run_plans_and_touches_nothing(deployed, sandbox):
    c = config(deployed, sandbox, run_id="dry", dry_run=True)
    before = cluster_state(K8sDriver(c))
    out = actions.cut_power("ansan", configuration=c)
    assert out["dry_run"] is True and "done" not in out
    assert any("taint node ansan-a" in line for line in out["plan"])
    assert cluster_state(K8sDriver(c)) == before


def test_bad_input_is_one_line_naming_site_and_cause(deployed, sandbox, tmp_path):
    c = config(deployed, sandbox, run_id="bad")
    with pytest.raises(ActivityFailed, match=r"unknown zone 'pangyo-z' \(valid: pangyo-a"):
        actions.kill_zone("pangyo-z", configuration=c)
    with pytest.raises(ActivityFailed, match="site ansan: kube context 'nowhere' is not in"):
        actions.kill_zone("ansan-a", configuration={**c, "contexts": {"ansan": "nowhere"}})
    # a namespace without twinsite's labels is refused before anything is touched
    driver = K8sDriver(c)
    cl = driver.clusters()["witness"]
    cl.core.patch_namespace(cl.namespace,
                            {"metadata": {"labels": {"app.kubernetes.io/part-of": None}}})
    try:
        with pytest.raises(ActivityFailed, match="site witness: namespace twinsite lacks the label"):
            actions.kill_zone("pangyo-a", configuration=c)
    finally:
        cl.core.patch_namespace(cl.namespace,
                                {"metadata": {"labels": {"app.kubernetes.io/part-of": "twinsite"}}})
    assert clean(cluster_state(driver))


# --- every experiment's method and rollbacks, through chaoslib ------------------------------------


def method_and_rollbacks(path: Path) -> dict:
    """The experiment as written, minus what needs a data plane (traffic control, hypothesis) and
    minus the pauses (no traffic to wait for)."""
    exp = yaml.safe_load(path.read_text())
    exp = copy.deepcopy(exp)
    exp.pop("controls", None)
    exp.pop("steady-state-hypothesis", None)
    for step in exp["method"] + exp.get("rollbacks", []):
        step.pop("pauses", None)
    exp["controls"] = [{"name": "api-state", "provider": {
        "type": "python", "module": "k8s_state_control"}}]
    return exp


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_experiment_method_and_rollbacks_on_the_clusters(path, deployed, sandbox):
    from chaoslib.experiment import run_experiment

    import k8s_state_control as control
    exp = method_and_rollbacks(path)
    run_id = f"exp-{path.stem}"
    exp["configuration"] = config(deployed, sandbox, run_id=run_id)
    control.snapshots.clear()
    t0 = time.monotonic()
    journal = run_experiment(exp, settings={"runtime": {"rollbacks": {"strategy": "always"}}})
    assert journal["status"] == "completed", [r.get("exception") for r in journal["run"]]
    driver = K8sDriver(exp["configuration"])
    # every fault action changed the API's state as it said; the method's end and the rollbacks
    # left nothing of the run behind
    fault_steps = [r for r in journal["run"] if r["activity"]["provider"]["func"] in
                   ("kill_zone", "kill_leader_zone", "cut_power", "partition_link",
                    "throttle_link")]
    assert fault_steps
    for r in fault_steps:
        st = control.snapshots[r["activity"]["name"]]
        done = r["output"]["done"]
        assert not clean(st), r["activity"]["name"]
        for site_obj in done.get("chaos_created", []):
            site, name = site_obj.split("/")
            assert name in st[site]["chaos"]
        for site_obj in done.get("nodes_tainted", []):
            site, name = site_obj.split("/")
            assert name in st[site]["tainted"]
    assert all(r["status"] == "succeeded" for r in journal["rollbacks"])
    assert clean(cluster_state(driver)), cluster_state(driver)
    print(f"{path.stem}: method + rollbacks on the clusters in {time.monotonic() - t0:.1f}s")


def test_fault_values_cover_every_experiment_fault():
    """Every fault an experiment injects is one of twinsite.faults' kinds (one vocabulary)."""
    kinds = {"kill_zone", "kill_leader_zone", "cut_power", "partition_link", "throttle_link",
             "restore", "heal_links", "move_stream_leader", "balance_leaders"}
    for path in EXPERIMENTS:
        exp = yaml.safe_load(path.read_text())
        for step in exp["method"] + exp["rollbacks"]:
            assert step["provider"]["func"] in kinds, (path.stem, step["name"])
    assert {f.KIND for f in faults.FAULTS} == {"kill-zone", "cut-power", "throttle", "partition",
                                               "restore", "heal"}
