"""Rooms over shards and the balancer's decision (pure)."""

from __future__ import annotations

import zlib
from collections import Counter

from twinsite import capacity, shards, topology
from twinsite.shards import BalancePolicy, Replica, ShardView

TOPO = topology.load_stack("lab")


def test_room_hash_is_stable_and_spread():
    # CRC-32 is fixed by the standard: the same room lands in the same shard in every process
    assert shards.shard_of("room-1", 180) == zlib.crc32(b"room-1") % 180
    assert shards.stream_of("room-1", 8) == f"TALK-{zlib.crc32(b'room-1') % 8:02d}"
    counts = Counter(shards.shard_of(f"r{i}", 8) for i in range(8000))
    assert set(counts) == set(range(8)) and max(counts.values()) < 1.1 * 1000


def test_shard_names_round_trip():
    assert shards.stream_name(7) == "TALK-07" and shards.shard_index("TALK-07") == 7
    assert shards.shard_index("TALK") is None and shards.shard_index("_lab_probe") is None


def test_shards_alternate_over_the_primary_sites_in_stack_order():
    assert [shards.preferred_site(i, TOPO) for i in range(4)] == ["pangyo", "ansan"] * 2
    assert shards.preferred_shards("ansan", 5, TOPO) == (1, 3)
    assert shards.room_home("x", 5, TOPO) == shards.preferred_site(shards.shard_of("x", 5), TOPO)


def test_lab_stack_runs_the_capacity_models_shard_count():
    p = capacity.plan(TOPO)
    assert p.shards == p.shards_needed == capacity.shard_count(TOPO)
    assert p.shards * TOPO.messaging.stream_capacity_msgs_per_s >= p.surge_peak_msgs_per_s
    assert p.shards == 180  # ceil(450,000 / 2,500)
    # the lab drills fewer on one machine, said so by the stack; render prints both
    assert capacity.lab_shard_count(TOPO) == TOPO.messaging.lab_stream_shards == 8
    text = capacity.explain(TOPO)
    assert "ceil(450000/2500) = 180" in text and "lab: drills 8 shards" in text


def test_a_stack_without_lab_shards_drills_what_it_deploys():
    import dataclasses
    t = dataclasses.replace(TOPO, messaging=dataclasses.replace(TOPO.messaging,
                                                               lab_stream_shards=None))
    assert capacity.lab_shard_count(t) == capacity.shard_count(t) == 180


def view(leader, *reps):
    return ShardView("TALK-00", leader, tuple(Replica(f"{s}-a", s, cur) for s, cur in reps))


TB = frozenset({"witness"})


def test_balancer_moves_only_towards_the_preferred_site():
    ansan = BalancePolicy("ansan")
    # ansan's shard led by pangyo, ansan's replica current -> move it to ansan
    assert ansan.target(view("pangyo", ("ansan", True), ("witness", True)), "ansan", TB) == "ansan-a"
    # not yet caught up -> wait
    assert ansan.target(view("pangyo", ("ansan", False), ("witness", True)), "ansan", TB) is None
    # already home, or an election running -> nothing
    assert ansan.target(view("ansan", ("pangyo", True), ("witness", True)), "ansan", TB) is None
    assert ansan.target(view(None, ("pangyo", True)), "ansan", TB) is None
    # pangyo's shard led by ansan: never pulled away by ansan
    assert ansan.target(view("ansan", ("pangyo", True), ("witness", True)), "pangyo", TB) is None


def test_no_shard_is_left_in_the_tiebreaker():
    ansan = BalancePolicy("ansan")
    # pangyo's shard led by the witness while pangyo is down: ansan takes it
    assert ansan.target(view("witness", ("ansan", True), ("pangyo", False)), "pangyo", TB) == "ansan-a"
    # ... but leaves it to pangyo when pangyo's replica is current
    assert ansan.target(view("witness", ("ansan", True), ("pangyo", True)), "pangyo", TB) is None


def test_hysteresis_hold_and_cooldown():
    p = BalancePolicy("pangyo", hold_s=3, cooldown_s=10)
    assert not p.due(None, None, 100)
    assert not p.due(98, None, 100)          # held 2 s < 3 s
    assert p.due(97, None, 100)
    assert not p.due(90, 95, 100)            # moved 5 s ago
    assert p.due(80, 89, 100)
