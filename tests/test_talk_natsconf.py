"""Every server config the lab generates is accepted by the real `nats-server -t` (config check)."""

from __future__ import annotations

import subprocess

import pytest

from twinsite import procs, topology
from twinsite.natscluster import LocalNatsCluster


@pytest.mark.parametrize("stack", ["lab", "fragile"])
def test_generated_configs_pass_nats_server_check(stack, tmp_path):
    topo = topology.load_stack(stack)
    cluster = LocalNatsCluster(topo, tmp_path)
    cluster.write_configs()
    binary = procs.nats_server_binary()
    assert len(cluster.nodes) == len(topo.zones)
    for zone, node in cluster.nodes.items():
        text = node.config_path.read_text()
        assert f'"site:{topo.site_of(zone)}"' in text and "sync_interval: always" in text
        p = subprocess.run([binary, "-t", "-c", str(node.config_path)], capture_output=True,
                           text=True, timeout=30)
        assert p.returncode == 0, f"{zone}: {p.stdout}{p.stderr}"


def test_nats_server_check_rejects_a_broken_config(tmp_path):
    bad = tmp_path / "bad.conf"
    bad.write_text("jetstream: { sync_interval: sometimes }\ncluster: { routes: [\n")
    p = subprocess.run([procs.nats_server_binary(), "-t", "-c", str(bad)], capture_output=True,
                       text=True, timeout=30)
    assert p.returncode != 0  # the check above can fail
