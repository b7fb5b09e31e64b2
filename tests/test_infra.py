"""The Pulumi program under Pulumi's own mocks: what it declares for each site's cluster."""

import os
import re
import subprocess
from pathlib import Path

import pulumi
import pytest

from twinsite import capacity, natsconf, procs, topology
from twinsite.k8s import common, gateway, mockrun
from twinsite.k8s.password import stable_bcrypt
from twinsite.k8s.site import NatsCredentials

STACKS = ("lab", "fragile", "example-prod")


@pytest.fixture(scope="module")
def runs():
    return {s: (topology.load_stack(s), mockrun.run(topology.load_stack(s))) for s in STACKS}


def k8s(resources, kind=None):
    out = [r for r in resources if r.is_kubernetes]
    return [r for r in out if r.inputs["kind"] == kind] if kind else out


def body(r):
    return mockrun.plain(r.inputs)


def site_label(r):
    return body(r)["metadata"]["labels"][common.SITE_LABEL]


@pytest.mark.parametrize("stack", STACKS)
def test_every_kubernetes_resource_has_its_own_sites_explicit_provider(runs, stack):
    topo, res = runs[stack]
    providers = {r.name: r for r in res if r.type == "pulumi:providers:kubernetes"}
    assert sorted(providers) == sorted(f"k8s-{s.name}" for s in topo.sites)
    for s in topo.sites:
        assert providers[f"k8s-{s.name}"].inputs.get("context") == s.kube_context
    resources = k8s(res)
    assert len(resources) > 10 * len(topo.sites)
    for r in resources:
        assert r.provider_urn, f"{r.name} uses the default provider"
        assert "::default" not in r.provider_urn
        assert r.provider_name == f"k8s-{site_label(r)}", r.name


@pytest.mark.parametrize("stack", STACKS)
def test_one_nats_statefulset_per_zone_with_matching_tags(runs, stack):
    topo, res = runs[stack]
    sets = {body(r)["metadata"]["name"]: body(r) for r in k8s(res, "StatefulSet")}
    assert sorted(sets) == sorted(f"nats-{z.name}" for z in topo.zones)
    configs = {body(r)["metadata"]["name"]: body(r)["data"]["nats.conf"]
               for r in k8s(res, "ConfigMap") if "nats.conf" in body(r).get("data", {})}
    for z in topo.zones:
        ss = sets[f"nats-{z.name}"]
        assert ss["spec"]["replicas"] == 1
        pod = ss["spec"]["template"]["spec"]
        assert pod["nodeSelector"] == {common.ZONE_KEY: z.name}
        assert ss["metadata"]["labels"][common.SITE_LABEL] == z.site
        conf = configs[f"nats-{z.name}-config"]
        assert f'"site:{z.site}"' in conf and f'"zone:{z.name}"' in conf
        assert f"sync_interval: {topo.messaging.fsync}" in conf
        c = pod["containers"][0]
        assert c["lifecycle"]["preStop"]["exec"]["command"][:2] == ["nats-server", "--signal"]
        assert c["livenessProbe"]["httpGet"]["path"].startswith("/healthz")
        assert c["readinessProbe"]["httpGet"]["path"] == "/healthz"
        assert ss["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    # one headless Service per zone, named like the StatefulSet's serviceName
    headless = {body(r)["metadata"]["name"] for r in k8s(res, "Service")
                if body(r)["spec"].get("clusterIP") == "None"}
    assert headless == set(sets)


ROUTE_RE = re.compile(r'"nats-route://route:__NATS_ROUTE_PASSWORD__@([^"]+)"')


def _zone_of_route(topo, address):
    for z in topo.zones:
        if address == z.route_address or address.startswith(f"nats-{z.name}-0.nats-{z.name}."):
            return z
    raise AssertionError(f"route {address} matches no zone")


@pytest.mark.parametrize("stack", STACKS)
def test_every_server_routes_to_every_other_server_across_sites(runs, stack):
    topo, res = runs[stack]
    for r in k8s(res, "ConfigMap"):
        conf = body(r).get("data", {}).get("nats.conf")
        if conf is None:
            continue
        me = topo.zone(re.search(r'server_name: "([^"]+)"', conf).group(1))
        targets = [_zone_of_route(topo, a) for a in ROUTE_RE.findall(conf)]
        assert sorted(z.name for z in targets) == sorted(z.name for z in topo.zones if z != me)
        for z, addr in zip(targets, ROUTE_RE.findall(conf)):
            if z.site == me.site:
                assert addr.endswith(".svc.cluster.local:6222")  # same cluster: pod DNS
            elif z.route_address:
                assert addr == z.route_address  # other cluster: the declared address
        assert "password: $NATS_ROUTE_PASSWORD" in conf  # routes authenticated
        for role, token in common.HASH_TOKENS.items():  # client users: bcrypt hashes at start
            assert f'user: "{role}"\n      password: "{token}"' in conf
        assert conf.count('ca_file: "/etc/nats-tls/ca.crt"') == 2  # clients and routes over TLS


def _workloads(res):
    return [r for r in k8s(res) if r.inputs["kind"] in ("Deployment", "StatefulSet")]


@pytest.mark.parametrize("stack", STACKS)
def test_every_workload_has_a_pdb(runs, stack):
    topo, res = runs[stack]
    pdbs = [body(r) for r in k8s(res, "PodDisruptionBudget")]
    workloads = _workloads(res)
    assert workloads
    for w in workloads:
        b = body(w)
        pod_labels = b["spec"]["template"]["metadata"]["labels"]
        ns = b["metadata"]["namespace"]
        covering = [p for p in pdbs if p["metadata"]["namespace"] == ns
                    and p["metadata"]["labels"][common.SITE_LABEL] == site_label(w)
                    and p["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()]
        assert covering, f"no PodDisruptionBudget covers {b['metadata']['name']} in {site_label(w)}"
        for p in covering:
            assert p["spec"].get("maxUnavailable") not in (0, "0", "0%")


@pytest.mark.parametrize("stack", STACKS)
def test_gateway_replicas_match_the_capacity_model(runs, stack):
    topo, res = runs[stack]
    plan = capacity.plan(topo)
    deps = {site_label(r): body(r) for r in k8s(res, "Deployment")
            if body(r)["metadata"]["name"] == "talk-gateway"}
    hpas = {site_label(r): body(r) for r in k8s(res, "HorizontalPodAutoscaler")}
    assert sorted(deps) == sorted(hpas) == sorted(s.name for s in topo.primary_sites)
    for sp in plan.sites:
        assert deps[sp.site]["spec"]["replicas"] == sp.min_replicas
        assert hpas[sp.site]["spec"]["minReplicas"] == sp.min_replicas
        assert hpas[sp.site]["spec"]["maxReplicas"] == sp.max_replicas
        pod = deps[sp.site]["spec"]["template"]["spec"]
        keys = {c["topologyKey"] for c in pod["topologySpreadConstraints"]}
        assert keys == {common.ZONE_KEY, common.HOST_KEY}
        c = pod["containers"][0]
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert c["image"] == topo.gateway.image


@pytest.mark.parametrize("stack", STACKS)
def test_secrets_are_secret_outputs(runs, stack):
    topo, res = runs[stack]
    secrets = k8s(res, "Secret")
    names = sorted(body(r)["metadata"]["name"] for r in secrets)
    assert names.count(common.CREDENTIALS_SECRET) == len(topo.sites)
    assert names.count(gateway.TOKENS_SECRET) == len(topo.primary_sites)
    for r in secrets:
        assert mockrun.has_secret(r.inputs["stringData"]), r.name
        assert "mock-" not in str(body(r))  # the rendered form never carries the value


def test_credentials_component_outputs_are_secret():
    def program():
        cred = NatsCredentials("creds")
        return pulumi.Output.all(cred.gateway_password.is_secret(), cred.route_password.is_secret(),
                                 cred.gateway_password)

    _, (client_secret, route_secret, value) = mockrun.run_callable(program, "unit")
    assert client_secret is True and route_secret is True
    assert value == "mock-creds-client"  # the awaited value, so the assertions above ran


def test_network_policies_default_deny_then_allow(runs):
    topo, res = runs["lab"]
    by_site = {}
    for r in k8s(res, "NetworkPolicy"):
        by_site.setdefault(site_label(r), {})[body(r)["metadata"]["name"]] = body(r)["spec"]
    for s in topo.sites:
        pols = by_site[s.name]
        assert pols["default-deny"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
        assert {"allow-nats-routes", "allow-nats-clients", "allow-nats-monitoring"} <= set(pols)
        assert ("allow-clients-to-gateway" in pols) == s.is_primary


def _tls_dir(d: Path) -> Path:
    """A TLS Secret's files as the pods mount them (certificate for 127.0.0.1 from a fresh CA)."""
    from twinsite.lab import pki
    d.mkdir(parents=True)
    for name, text in pki.secret_data(pki.make(d / "src", ["nats"]), "nats").items():
        (d / name).write_text(text)
    return d


def test_a_rendered_kubernetes_config_authenticates_for_real(runs, tmp_path):
    """One server started from the program's nats.conf, secrets filled in as the entrypoint does:
    the gateway and ops users get in over TLS with their passwords (the program's bcrypt hashes
    are what nats-server checks), a wrong password and a plain-TCP client do not."""
    import asyncio

    import nats

    from twinsite.natsclient import NatsAuth
    topo, res = runs["lab"]
    conf = next(body(r)["data"]["nats.conf"] for r in k8s(res, "ConfigMap")
                if body(r)["metadata"]["name"] == "nats-pangyo-a-config")
    tls = _tls_dir(tmp_path / "tls")
    port, route_port, http_port = procs.free_ports(3)
    for role, token in common.HASH_TOKENS.items():
        conf = conf.replace(token, stable_bcrypt(f"{role}-pw", role))
    conf = (conf.replace(common.ROUTE_PASSWORD_TOKEN, "r0ute")
            .replace(common.NATS_TLS_DIR, str(tls))
            .replace('"/data/jetstream"', f'"{tmp_path / "js"}"').replace("0.0.0.0", "127.0.0.1")
            .replace(f":{common.CLIENT_PORT}", f":{port}").replace("port: 4222", f"port: {port}")
            .replace(f"127.0.0.1:{common.ROUTE_PORT}", f"127.0.0.1:{route_port}")
            .replace(f"127.0.0.1:{common.MONITOR_PORT}", f"127.0.0.1:{http_port}")
            .replace('"/var/run/nats/nats.pid"', f'"{tmp_path / "pid"}"'))
    (tmp_path / "nats.conf").write_text(conf)
    p = procs.spawn([procs.nats_server_binary(), "-c", str(tmp_path / "nats.conf")],
                    log=tmp_path / "nats.log", env=dict(os.environ, NATS_ROUTE_PASSWORD="r0ute"))
    url = f"nats://127.0.0.1:{port}"

    async def connects(**opts) -> bool:
        try:
            nc = await nats.connect(url, allow_reconnect=False, max_reconnect_attempts=0,
                                    connect_timeout=3, **opts)
        except Exception:  # noqa: BLE001 - refused, whichever way nats-py says it
            return False
        await nc.close()
        return True
    try:
        procs.wait_until(lambda: procs.http_status(f"http://127.0.0.1:{http_port}/varz") == 200,
                         30, what="nats-server from the rendered config")
        ca = str(tls / "ca.crt")
        for role in common.HASH_TOKENS:
            assert asyncio.run(connects(**NatsAuth(role, f"{role}-pw", ca).options())), role
            assert not asyncio.run(connects(**NatsAuth(role, "wrong", ca).options())), role
        assert not asyncio.run(connects(user="gateway", password="gateway-pw"))  # plain TCP
    finally:
        procs.reap(p)


def test_rendered_nats_configs_are_accepted_by_nats_server(runs, tmp_path):
    """The real nats-server parses every generated config (secrets from the environment)."""
    topo, res = runs["example-prod"]
    pki_dir = _tls_dir(tmp_path / "tls")
    env = dict(os.environ, NATS_ROUTE_PASSWORD="r0ute")
    confs = [body(r)["data"]["nats.conf"] for r in k8s(res, "ConfigMap")
             if "nats.conf" in body(r).get("data", {})]
    assert len(confs) == len(topo.zones)
    for i, conf in enumerate(confs):
        path = tmp_path / f"{i}.conf"
        # what the container's entrypoint does, with a store dir this machine can write
        for token in common.HASH_TOKENS.values():
            conf = conf.replace(token, stable_bcrypt("p4ss", token))
        path.write_text(conf.replace(common.ROUTE_PASSWORD_TOKEN, "r0ute")
                        .replace('"/data/jetstream"', f'"{tmp_path / str(i)}"')
                        .replace(common.NATS_TLS_DIR, str(pki_dir)))
        out = subprocess.run([procs.nats_server_binary(), "-t", "-c", str(path)], env=env,
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr + out.stdout


def test_config_comes_from_the_shared_generator(runs):
    topo, res = runs["lab"]
    conf = next(body(r)["data"]["nats.conf"] for r in k8s(res, "ConfigMap")
                if body(r)["metadata"]["name"] == "nats-pangyo-a-config")
    plain_doc = natsconf.server_document(topo, natsconf.ServerPlan(
        zone="pangyo-a", client_listen="0.0.0.0:4222", cluster_listen="0.0.0.0:6222",
        store_dir="/data/jetstream", routes=()))
    for key in ("server_tags", "ping_interval", "jetstream", "lame_duck_duration"):
        assert f"{key}: {natsconf.render_value(plain_doc[key])}" in conf


def test_infra_main_is_a_thin_entry_point():
    text = (Path(__file__).resolve().parent.parent / "infra" / "__main__.py").read_text()
    assert "deploy(topology_from_pulumi_config())" in text


@pytest.mark.parametrize("stack", STACKS)
def test_gateway_pods_get_the_same_topology_as_a_stack_file(runs, stack):
    from twinsite.k8s import stackconf

    topo, res = runs[stack]
    assert topology.from_config(stackconf.to_config(topo), stack=stack) == topo  # round trip
    for r in k8s(res, "ConfigMap"):
        b = body(r)
        if b["metadata"]["name"] != common.STACK_CONFIGMAP:
            continue
        import yaml
        doc = yaml.safe_load(b["data"][f"Pulumi.{stack}.yaml"])["config"]
        values = {k.split(":", 1)[1]: v for k, v in doc.items()}
        assert topology.from_config(values, stack=stack) == topo
    gw = [body(r) for r in k8s(res, "Deployment") if body(r)["metadata"]["name"] == "talk-gateway"]
    assert gw
    for d in gw:
        c = d["spec"]["template"]["spec"]["containers"][0]
        assert c["workingDir"] == common.STACK_DIR
        assert c["args"][:2] == ["talk", "serve"] and c["args"][c["args"].index("--stack") + 1] == stack


def unwrapped(value):
    """Inputs with every secret opened (the mocks' stand-in values), for equality checks."""
    from pulumi.runtime import rpc
    if rpc.is_rpc_secret(value):
        return unwrapped(rpc.unwrap_rpc_secret(value))
    if isinstance(value, dict):
        return {k: unwrapped(v) for k, v in value.items()}
    return value


@pytest.mark.parametrize("stack", STACKS)
def test_gateway_token_comes_from_a_secret_file(runs, stack):
    """The API token: one per stack, a Secret per primary site, mounted read-only as the file
    `talk serve --token-file` reads; never an argument, an env value or a ConfigMap entry."""
    topo, res = runs[stack]
    tokens = [r for r in k8s(res, "Secret") if body(r)["metadata"]["name"] == gateway.TOKENS_SECRET]
    assert sorted(site_label(r) for r in tokens) == sorted(s.name for s in topo.primary_sites)
    for r in tokens:
        assert mockrun.has_secret(r.inputs["stringData"])
    values = {unwrapped(r.inputs["stringData"])[gateway.TOKENS_KEY] for r in tokens}
    assert values == {"mock-talk-token-value"}  # one generated token, shared by the sites
    deployments = [body(r) for r in k8s(res, "Deployment")
                   if body(r)["metadata"]["name"] == "talk-gateway"]
    assert len(deployments) == len(topo.primary_sites)
    for d in deployments:
        pod = d["spec"]["template"]["spec"]
        c = pod["containers"][0]
        path = c["args"][c["args"].index("--token-file") + 1]
        mount = next(m for m in c["volumeMounts"] if path.startswith(m["mountPath"] + "/"))
        assert mount["readOnly"] is True
        vol = next(v for v in pod["volumes"] if v["name"] == mount["name"])
        assert vol["secret"]["secretName"] == gateway.TOKENS_SECRET
        assert vol["secret"]["defaultMode"] == 0o440
        assert path.endswith("/" + vol["secret"]["items"][0]["path"])
        assert not any("token" in (e.get("name") or "").lower() for e in c.get("env", []))
    for r in k8s(res, "ConfigMap"):
        assert "mock-talk-token" not in str(r.inputs)


def test_the_token_is_a_secret_stack_output_and_can_be_given():
    from twinsite.k8s.gateway import TalkToken

    def program():
        t = TalkToken("tok")
        return pulumi.Output.all(t.value.is_secret(), t.value)

    _, (secret, value) = mockrun.run_callable(program, "unit")
    assert secret is True and value == "mock-tok-value"
