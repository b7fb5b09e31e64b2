"""`twinsite render`: schema-valid manifests per site, without a cluster or the Pulumi CLI."""

import json
import runpy
from pathlib import Path

import kubernetes_validate
import pulumi
import yaml

from twinsite import cli, render, topology
from twinsite.k8s import mockrun

ROOT = Path(__file__).resolve().parent.parent


def test_render_lab_writes_one_valid_manifest_per_resource(tmp_path, capsys):
    assert cli.main(["render", "--stack", "lab", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "all valid for Kubernetes 1.31.0 (strict)" in out
    topo = topology.load_stack("lab")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(s.name for s in topo.sites)
    files = sorted(tmp_path.glob("*/*.yaml"))
    n_k8s = sum(1 for r in mockrun.run(topo) if r.is_kubernetes)
    assert len(files) == n_k8s
    kinds = set()
    for f in files:
        doc = yaml.safe_load(f.read_text())
        assert f.name == f"{doc['kind'].lower()}-{doc['metadata']['name']}.yaml"
        assert doc["metadata"]["labels"]["twinsite.io/site"] == f.parent.name
        for version in (render.K8S_VERSION, kubernetes_validate.latest_version() + ".0"):
            kubernetes_validate.validate(doc, version, strict=True)
        kinds.add(doc["kind"])
    assert {"StatefulSet", "Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget",
            "NetworkPolicy", "Secret", "Service", "ConfigMap", "Namespace"} <= kinds
    # secrets never reach the files
    secret = yaml.safe_load((tmp_path / "pangyo" / "secret-nats-credentials.yaml").read_text())
    assert set(secret["stringData"].values()) == {mockrun.SECRET_PLACEHOLDER}
    tokens = yaml.safe_load((tmp_path / "pangyo" / "secret-talk-api-tokens.yaml").read_text())
    assert tokens["stringData"] == {"tokens": mockrun.SECRET_PLACEHOLDER}
    assert not (tmp_path / "witness" / "secret-talk-api-tokens.yaml").exists()  # no gateways
    assert "mock-" not in "".join(f.read_text() for f in files)
    # the NATS config is a readable block, not an escaped one-liner
    assert "sync_interval: always\n" in (tmp_path / "witness" / "configmap-nats-witness-a-config.yaml").read_text()


def test_strict_validation_catches_a_bad_manifest():
    m = render.Manifest("pangyo", "Deployment", "x", {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
        "spec": {"replicas": 1, "selektor": {}, "template": {}}})
    err = render.validate(m)
    assert err and err.startswith("pangyo/deployment-x.yaml")


def test_rerender_replaces_stale_files(tmp_path):
    (tmp_path / "pangyo").mkdir()
    (tmp_path / "pangyo" / "deployment-gone.yaml").write_text("stale")
    assert render.main(["--stack", "lab", "--out", str(tmp_path), "--no-validate"]) == 0
    assert not (tmp_path / "pangyo" / "deployment-gone.yaml").exists()


def test_bad_stack_is_one_line_exit_2(tmp_path, capsys):
    bad = tmp_path / "Pulumi.bad.yaml"
    bad.write_text("config:\n  twinsite:sites:\n    - name: a\n      role: boss\n      zones: [a-1]\n")
    assert cli.main(["render", "--file", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "twinsite:sites[0].role" in err and "Traceback" not in err
    assert cli.main(["render", "--stack", "no-such-stack", "--out", str(tmp_path / "o")]) == 2
    assert "stack file not found" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_infra_main_reads_the_stack_config_through_pulumi(monkeypatch):
    """`pulumi up` path: infra/__main__.py reads `twinsite:` config via pulumi.Config."""
    doc = yaml.safe_load((ROOT / "Pulumi.lab.yaml").read_text())["config"]
    config = {k: json.dumps(v) for k, v in doc.items()}

    def program():
        for k, v in config.items():
            pulumi.runtime.set_config(k, v)
        try:
            runpy.run_path(str(ROOT / "infra" / "__main__.py"), run_name="__main__")
        finally:
            for k in config:
                pulumi.runtime.config.CONFIG.get().pop(k, None)

    via_cli, _ = mockrun.run_callable(program, "lab")
    direct = mockrun.run(topology.load_stack("lab"))
    assert len(via_cli) == len(direct) > 50
    assert sorted(r.name for r in via_cli) == sorted(r.name for r in direct)
    assert ({r.name: mockrun.plain(r.inputs) for r in via_cli}
            == {r.name: mockrun.plain(r.inputs) for r in direct})
