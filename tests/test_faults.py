"""The fault model is pure: faults are values, `resolve` maps them onto a topology, `settle` books
which faults a restore or heal ends. No lab, no cluster: every case here is a plain function call."""

from __future__ import annotations

import pytest

from twinsite import faults as F
from twinsite.topology import load_stack

TOPO = load_stack("lab")
EVERY_ZONE = tuple(z.name for z in TOPO.zones)


def test_zone_power_loss_is_silent_and_drops_unsynced_writes():
    e = F.resolve(F.ZoneOutage("pangyo-a"), TOPO)
    assert (e.action, e.zones, e.sites, e.gateway_zones) == (F.Action.DOWN, ("pangyo-a",),
                                                              ("pangyo",), ("pangyo-a",))
    assert e.silent and e.drops_unsynced and e.marker == "zone-power:pangyo-a"


def test_zone_crash_is_loud_and_keeps_the_page_cache():
    e = F.resolve(F.ZoneOutage("pangyo-c", mode="crash"), TOPO)
    assert e.mode is F.Mode.CRASH and not e.silent and not e.drops_unsynced
    assert e.gateway_zones == ()  # pangyo-c runs no gateway in the lab stack
    assert e.marker == "zone-crash:pangyo-c"


def test_site_and_grid_power_loss():
    site = F.resolve(F.SitePowerLoss("ansan"), TOPO)
    assert site.zones == ("ansan-a", "ansan-b", "ansan-c") and site.marker == "site-power:ansan"
    grid = F.resolve(F.SitePowerLoss("all"), TOPO)
    assert grid.zones == EVERY_ZONE and set(grid.sites) == {"pangyo", "ansan", "witness"}
    assert grid.marker == "grid-power" and grid.drops_unsynced


def test_links_between_sites_zones_and_within_a_site():
    shape = F.resolve(F.LinkShape("pangyo", "ansan", 80, jitter_ms=5, bandwidth_kbit=800), TOPO)
    assert len(shape.links) == 9 and shape.site_pairs == (("ansan", "pangyo"),)
    assert shape.shape.latency_ms == 80 and shape.shape.bandwidth_kbit == 800
    assert shape.marker == "throttle:ansan<->pangyo" and not shape.silent
    cut = F.resolve(F.LinkPartition("witness-a", "pangyo-b"), TOPO)
    assert [p.key for p in cut.links] == ["pangyo-b~witness-a"] and cut.silent
    inside = F.resolve(F.LinkPartition("pangyo", "pangyo"), TOPO)
    assert len(inside.links) == 3 and inside.site_pairs == (("pangyo", "pangyo"),)
    every = F.resolve(F.Heal(), TOPO)
    assert len(every.links) == 21 and every.marker is None  # 7 zones, every pair once


@pytest.mark.parametrize("fault, message", [
    (F.ZoneOutage("pangyo-z"), "unknown zone 'pangyo-z' (valid: pangyo-a, pangyo-b, pangyo-c, "
                               "ansan-a, ansan-b, ansan-c, witness-a)"),
    (F.SitePowerLoss("busan"), "unknown site 'busan' (valid: pangyo, ansan, witness, or all)"),
    (F.SitePowerLoss("pangyo-a"), "unknown site 'pangyo-a'"),
    (F.LinkShape("pangyo", "mars", 10), "unknown site or zone 'mars'"),
    (F.LinkPartition("ansan-a", "ansan-a"), "no link between 'ansan-a' and 'ansan-a'"),
    (F.Restore("nowhere"), "unknown site or zone 'nowhere'"),
    (F.Heal("pangyo", "nowhere"), "unknown site or zone 'nowhere'"),
])
def test_unknown_names_are_one_line_listing_the_valid_ones(fault, message):
    with pytest.raises(F.FaultError) as e:
        F.resolve(fault, TOPO)
    assert message in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("build, message", [
    (lambda: F.ZoneOutage("pangyo-a", mode="flood"), "mode must be one of power, crash"),
    (lambda: F.LinkShape("a", "b", -1), "latency_ms must be a number >= 0"),
    (lambda: F.LinkShape("a", "b", "100"), "latency_ms must be a number"),
    (lambda: F.LinkShape("a", "b", float("nan")), "latency_ms must be a number"),
    (lambda: F.LinkShape("a", "b", 1, jitter_ms=-2), "jitter_ms must be"),
    (lambda: F.LinkShape("a", "b", 1, bandwidth_kbit=1.5), "bandwidth_kbit must be a whole"),
    (lambda: F.LinkShape("a", "b", 1, bandwidth_kbit=True), "bandwidth_kbit must be a whole"),
    (lambda: F.Restore("all", timeout_s=0), "timeout_s must be a number >= 1"),
    (lambda: F.Heal("pangyo"), "name both ends"),
    (lambda: F.ZoneOutage(""), "zone must be a name"),
])
def test_bad_values_fail_when_the_fault_is_built(build, message):
    with pytest.raises(F.FaultError, match=message):
        build()


def test_restore_all_after_the_grid_went_dark_is_a_black_start():
    assert F.resolve(F.Restore("all"), TOPO, down=frozenset(EVERY_ZONE)).black_start
    assert not F.resolve(F.Restore("all"), TOPO, down=frozenset(EVERY_ZONE[:3])).black_start
    site = F.resolve(F.Restore("pangyo"), TOPO, down=frozenset(EVERY_ZONE))
    assert not site.black_start and site.links == ()  # a site's restore heals no link
    assert len(F.resolve(F.Restore(), TOPO).links) == 21  # restore all heals every link


def test_settle_ends_what_a_restore_or_heal_covers():
    zone = F.resolve(F.ZoneOutage("pangyo-a"), TOPO)
    site = F.resolve(F.SitePowerLoss("ansan"), TOPO)
    cut = F.resolve(F.LinkPartition("pangyo", "witness"), TOPO)
    active = ()
    for e in (zone, site, cut):
        active, ended = F.settle(active, e)
        assert ended == ()
    active, ended = F.settle(active, F.resolve(F.Restore("ansan-a"), TOPO))
    assert ended == () and len(active) == 3  # one zone of three back: the site is still dark
    active, ended = F.settle(active, F.resolve(F.Restore("pangyo"), TOPO))
    assert ended == (zone,)
    active, ended = F.settle(active, F.resolve(F.Heal("pangyo", "ansan"), TOPO))
    assert ended == ()  # another link
    active, ended = F.settle(active, F.resolve(F.Heal("witness", "pangyo"), TOPO))
    assert ended == (cut,)
    active, ended = F.settle(active, F.resolve(F.Restore("all"), TOPO))
    assert ended == (site,) and active == ()


def test_the_same_fault_twice_is_one_active_fault():
    e = F.resolve(F.LinkShape("pangyo", "ansan", 50), TOPO)
    active, _ = F.settle((), e)
    active, _ = F.settle(active, F.resolve(F.LinkShape("ansan", "pangyo", 90), TOPO))
    assert len(active) == 1 and active[0].shape.latency_ms == 90


@pytest.mark.parametrize("fault", [
    F.ZoneOutage("pangyo-a", "crash"), F.SitePowerLoss("all"), F.LinkShape("a", "b", 1.5, 2, 9),
    F.LinkPartition("a", "b"), F.Restore(), F.Restore("ansan", 5), F.Heal(), F.Heal("a", "b"),
])
def test_the_wire_format_round_trips(fault):
    doc = F.to_dict(fault)
    assert doc["kind"] == fault.KIND and F.from_dict(doc) == fault
    import json
    assert F.from_dict(json.loads(json.dumps(doc))) == fault


@pytest.mark.parametrize("doc, message", [
    ({"kind": "flood"}, "unknown fault kind 'flood' (valid: kill-zone, cut-power, throttle, "
                        "partition, restore, heal)"),
    ({"kind": "kill-zone", "zone": "x", "blast": 1}, "kill-zone: unknown argument(s) blast"),
    ({"kind": "cut-power"}, "cut-power:"),
    ("restore", "a fault is a JSON object"),
])
def test_bad_wire_documents_are_one_line(doc, message):
    with pytest.raises(F.FaultError) as e:
        F.from_dict(doc)
    assert message in str(e.value)


def test_summary_is_plain_data():
    import json
    s = F.resolve(F.SitePowerLoss("pangyo"), TOPO).summary()
    assert json.loads(json.dumps(s)) == s
    assert s["drops_unsynced"] is True and s["fault"] == {"kind": "cut-power", "site": "pangyo"}


@pytest.mark.parametrize("fault", [
    F.ZoneOutage("pangyo-a", F.Mode.POWER), F.ZoneOutage("pangyo-a", F.Mode.CRASH),
    F.SitePowerLoss("ansan"), F.SitePowerLoss("all"), F.LinkShape("pangyo", "ansan", 50.0),
    F.LinkPartition("pangyo", "ansan")])
def test_a_power_marker_is_exactly_a_fault_that_drops_unsynced_writes(fault):
    """The report hatches power-loss windows by marker; the marker must say what the effect does."""
    effect = F.resolve(fault, TOPO)
    assert F.is_power_marker(effect.marker) == effect.drops_unsynced
