"""The dual-site policy pack, evaluated offline over the program's resources under mocks."""

import json
import runpy
import sys
from pathlib import Path

import pytest
from pulumi_policy import (EnforcementLevel, PolicyConfigSchema, ResourceValidationPolicy,
                           StackValidationPolicy)

from twinsite import cli, policycheck, topology

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "stacks"
POLICIES = policycheck.load_policies(ROOT)
NAMES = ["tiebreaker-quorum", "every-workload-in-every-site", "site-capacity", "stream-replicas",
         "nats-fsync-always", "pdb-required", "pdb-allows-disruption", "zone-spread",
         "probes-required", "resources-required", "non-root-readonly", "image-pinned",
         "explicit-provider"]


def test_the_pack_has_the_contracted_rules_and_levels():
    assert [p.name for p in POLICIES] == NAMES
    mod = sys.modules["twinsite_policies"]
    for p in POLICIES:
        assert isinstance(p, (ResourceValidationPolicy, StackValidationPolicy))
        want = EnforcementLevel.MANDATORY if p.name in mod.DUAL_SITE else EnforcementLevel.ADVISORY
        assert p.enforcement_level == want, p.name
    for name in NAMES[:3] + ["pdb-required"]:
        assert isinstance(next(p for p in POLICIES if p.name == name), StackValidationPolicy)
    schemas = {p.name: p.config_schema for p in POLICIES if p.config_schema}
    assert {"tiebreaker-quorum", "site-capacity", "stream-replicas", "zone-spread"} <= set(schemas)
    assert all(isinstance(s, PolicyConfigSchema) for s in schemas.values())
    # __main__ builds the PolicyPack only when run as a program (it would start a server)
    text = (ROOT / "policies" / "__main__.py").read_text()
    assert 'if __name__ == "__main__":' in text
    runpy.run_path(str(ROOT / "policies" / "__main__.py"), run_name="not_main")
    assert (ROOT / "policies" / "PulumiPolicy.yaml").is_file()
    assert "pulumi-policy" in (ROOT / "policies" / "requirements.txt").read_text()


@pytest.mark.parametrize("stack", ["lab", "example-prod"])
def test_good_stacks_pass_clean(stack):
    assert policycheck.evaluate(topology.load_stack(stack)) == []


# fixture -> the mandatory rules it must trigger, and words the message must carry
EXPECTED = {
    "two-sites": ({"tiebreaker-quorum", "stream-replicas"}, "tie-breaker site"),
    "replicas-1": ({"stream-replicas"}, "streamReplicas >= 3"),
    "undersized-site": ({"site-capacity"}, "maxGatewayReplicas to at least 225"),
    "undersized-engine": ({"site-capacity"}, "the message engine is short: leading all 8 stream "
                                             "shards x 2500 = 20000 msgs/s"),
    "default-fsync": ({"nats-fsync-always"}, "fsync: always"),
    "one-site-tool": ({"every-workload-in-every-site"}, "'failover-console' runs only in pangyo"),
}


@pytest.mark.parametrize("fixture", sorted(EXPECTED))
def test_each_fixture_fires_exactly_its_rule(fixture):
    rules, words = EXPECTED[fixture]
    v = policycheck.evaluate(topology.load_file(FIXTURES / f"Pulumi.{fixture}.yaml"))
    assert {x.rule for x in v} == rules  # advisory rules stay quiet too
    assert all(x.enforcement == "mandatory" for x in v)
    assert any(words in x.message for x in v), [x.message for x in v]


def test_fragile_fails_naming_the_rule(capsys):
    assert cli.main(["policy", "check", "--stack", "fragile"]) == 1
    out = capsys.readouterr().out
    assert out.startswith("tiebreaker-quorum [mandatory] stack: ")
    assert "stream-replicas [mandatory]" in out


def test_json_output_and_exit_codes(capsys):
    assert cli.main(["policy", "check", "--stack", "lab", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert cli.main(["policy", "check", "--file", str(FIXTURES / "Pulumi.undersized-site.yaml"),
                     "--json"]) == 1
    items = json.loads(capsys.readouterr().out)
    assert [i["rule"] for i in items] == ["site-capacity"]
    assert set(items[0]) == {"rule", "enforcement", "resource", "message", "urn"}


def test_config_overrides_levels_and_thresholds(tmp_path, capsys):
    cfg = tmp_path / "policy.json"
    cfg.write_text(json.dumps({"tiebreaker-quorum": "advisory", "stream-replicas": "disabled"}))
    # fragile's failures downgraded/disabled -> passes, but still reports the quorum problem
    assert cli.main(["policy", "check", "--stack", "fragile", "--config", str(cfg)]) == 0
    assert "tiebreaker-quorum [advisory]" in capsys.readouterr().out
    cfg.write_text(json.dumps({"site-capacity": {"surgePeakMsgsPerS": 1_000_000}}))
    assert cli.main(["policy", "check", "--stack", "lab", "--config", str(cfg)]) == 1
    assert "below the surge peak 1e+06" in capsys.readouterr().out
    cfg.write_text(json.dumps({"image-pinned": "sometimes"}))
    assert cli.main(["policy", "check", "--stack", "lab", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown enforcement level" in err and "\n" not in err


def test_bad_stack_is_one_line_exit_2(tmp_path, capsys):
    bad = tmp_path / "Pulumi.bad.yaml"
    bad.write_text("config:\n  twinsite:messaging:\n    streamReplicas: many\n")
    assert cli.main(["policy", "check", "--file", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "twinsite:sites" in err


def test_hygiene_rules_fire_on_bad_objects():
    """The advisory rules are not vacuous: a hand-made bad Deployment trips each of them."""
    from pulumi_policy import (PolicyCustomTimeouts, PolicyProviderResource, PolicyResourceOptions,
                               ResourceValidationArgs)

    opts = PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [])
    dep = {"kind": "Deployment", "metadata": {"name": "bad", "labels": {"twinsite.io/site": "x"}},
           "spec": {"replicas": 3, "template": {"spec": {
               "nodeSelector": {"topology.kubernetes.io/zone": "x-a"},
               "containers": [{"name": "c", "image": "nginx:latest"}]}}}}
    pdb = {"kind": "PodDisruptionBudget", "metadata": {"name": "p"}, "spec": {"maxUnavailable": 0}}
    default = PolicyProviderResource("pulumi:providers:kubernetes", {},
                                     "urn:pulumi:s::p::pulumi:providers:kubernetes::default_4_0_0",
                                     "default_4_0_0")
    fired = set()
    for p in POLICIES:
        if not isinstance(p, ResourceValidationPolicy):
            continue
        for t, props in (("kubernetes:apps/v1:Deployment", dep),
                         ("kubernetes:policy/v1:PodDisruptionBudget", pdb)):
            p.validate(ResourceValidationArgs(t, props, "urn:x", "bad", opts, default, {"minZones": 2}),
                       lambda msg, urn=None, _n=p.name: fired.add(_n))
    assert fired == {"pdb-allows-disruption", "zone-spread", "probes-required",
                     "resources-required", "non-root-readonly", "image-pinned", "explicit-provider"}
