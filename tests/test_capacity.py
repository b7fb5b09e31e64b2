"""The capacity model: either primary site alone carries the surge peak."""

import math

from hypothesis import given, settings, strategies as st

from twinsite import capacity, topology


def test_lab_numbers():
    topo = topology.load_stack("lab")
    p = capacity.plan(topo)
    assert p.per_replica_msgs_per_s == 2000
    assert p.surge_peak_msgs_per_s == 450_000
    assert [s.site for s in p.sites] == ["pangyo", "ansan"]
    for s in p.sites:
        assert s.min_replicas == 12  # ceil(45000 / 2 sites / 2000) = ceil(11.25)
        assert s.max_replicas == 225  # ceil(450000 / 2000): the whole surge in one site
        assert s.max_capacity_msgs_per_s(2000) >= p.surge_peak_msgs_per_s
    assert p.shortfalls() == {}
    assert "carries the surge alone" in capacity.explain(topo)


def _topo(baseline, surge, per_replica, zones, per_zone, n_primary):
    sites = [{"name": f"p{i}", "role": "primary", "zones": [f"p{i}-{z}" for z in range(zones)]}
             for i in range(n_primary)] + [{"name": "w", "role": "tiebreaker", "zones": ["w-a"]}]
    names = [s["name"] for s in sites]
    links = [{"sites": [a, b]} for i, a in enumerate(names) for b in names[i + 1:]]
    return topology.from_config({
        "sites": sites, "links": {"interSite": links},
        "traffic": {"baselineMsgsPerS": baseline, "surgeFactor": surge},
        "gateway": {"capacityMsgsPerS": per_replica, "replicasPerZone": per_zone},
    }, stack="prop")


@settings(max_examples=200, deadline=None)
@given(baseline=st.integers(0, 2_000_000), surge=st.integers(1, 20),
       per_replica=st.integers(1, 50_000), zones=st.integers(1, 4), per_zone=st.integers(1, 3),
       n_primary=st.integers(2, 3))
def test_every_primary_site_alone_carries_the_surge(baseline, surge, per_replica, zones, per_zone,
                                                    n_primary):
    topo = _topo(baseline, surge, per_replica, zones, per_zone, n_primary)
    p = capacity.plan(topo)
    assert len(p.sites) == n_primary
    for s in p.sites:
        assert s.max_replicas * per_replica >= baseline * surge
        # and not wastefully: one replica fewer would not carry it (unless the zone floor rules)
        floor = per_zone * zones
        assert s.max_replicas == max(1, floor, math.ceil(baseline * surge / per_replica))
        assert floor <= s.min_replicas <= s.max_replicas
        # normal times: the primary sites together carry the baseline at their HPA minimum
        assert s.min_replicas * per_replica * n_primary >= baseline
        assert s.min_replicas == max(1, floor, math.ceil(baseline / n_primary / per_replica))


def test_a_declared_cap_below_the_surge_is_a_shortfall():
    raw = topology.load_stack("lab")
    values = {"sites": [
        {"name": "pangyo", "role": "primary", "zones": ["pangyo-a", "pangyo-b"],
         "maxGatewayReplicas": 100},
        {"name": "ansan", "role": "primary", "zones": ["ansan-a", "ansan-b"]},
        {"name": "witness", "role": "tiebreaker", "zones": ["witness-a"]}],
        "links": {"interSite": [{"sites": ["pangyo", "ansan"]}, {"sites": ["pangyo", "witness"]},
                                {"sites": ["ansan", "witness"]}]}}
    topo = topology.from_config(values, stack="capped")
    p = capacity.plan(topo)
    assert p.site("pangyo").max_replicas == 100 and p.site("pangyo").capped
    assert p.shortfalls() == {"pangyo": raw.traffic.surge_peak_msgs_per_s - 100 * 2000}
    assert "SHORT by 250000" in capacity.explain(topo)
