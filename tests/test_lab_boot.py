"""The lab's boot rules, pure: who dials whom while the lab boots, and when a first meta election
has split (nobody can still collect the votes nats-server needs on empty logs)."""

from __future__ import annotations

import itertools

from twinsite.lab import model
from twinsite.lab.model import MetaView
from twinsite.topology import load_stack

ZONES = tuple(z.name for z in load_stack("lab").zones)


def test_exactly_one_side_of_every_pair_dials_at_boot():
    assert len(ZONES) == 7
    for a, b in itertools.combinations(ZONES, 2):
        d = model.boot_dialler(ZONES, a, b)
        assert d in (a, b) and d == model.boot_dialler(ZONES, b, a)
    # the later zone dials: the first is dialled by all six others, the last dials all six
    dialled = {z: sum(model.boot_dialler(ZONES, z, o) != z for o in ZONES if o != z) for z in ZONES}
    assert dialled[ZONES[0]] == 6 and dialled[ZONES[-1]] == 0
    assert sorted(dialled.values()) == list(range(7))


def view(zone, state="FOLLOWER", term=1, voted="", leader="", size=6):
    return MetaView(zone, state, term, voted, leader, size)


def test_a_term_where_nobody_can_reach_the_group_size_is_a_split():
    # two candidates holding 4 and 3 votes: 6 needed, nothing left to cast
    views = [view("a", "CANDIDATE", voted="A")] + [view(z, voted="A") for z in "bcd"] + \
            [view("e", "CANDIDATE", voted="E"), view("f", voted="E"), view("g", voted="E")]
    assert model.meta_split(views, 7)


def test_a_candidate_that_can_still_win_is_not_a_split():
    # 4 votes cast for A, two servers have not voted yet: 4 + 2 = 6 reachable
    views = [view("a", "CANDIDATE", voted="A")] + [view(z, voted="A") for z in "bcd"] + \
            [view("e", "CANDIDATE", voted="E"), view("f", term=0), view("g", term=0)]
    assert not model.meta_split(views, 7)
    # servers that did not answer count as not voted
    assert not model.meta_split(views[:5], 7)


def test_no_split_before_a_campaign_with_a_leader_or_across_terms():
    assert not model.meta_split([], 7)
    assert not model.meta_split([view(z, term=0) for z in "abcdefg"], 7)
    lost = [view(z, "CANDIDATE", voted=z.upper()) for z in "abcdefg"]
    assert model.meta_split(lost, 7)
    assert not model.meta_split(lost[:6] + [view("g", "LEADER", voted="G")], 7)
    assert not model.meta_split(lost[:6] + [view("g", leader="A", voted="A")], 7)
    assert not model.meta_split(lost[:6] + [view("g", "CANDIDATE", term=2, voted="G")], 7)


def test_a_campaign_that_missed_a_server_is_a_lost_request():
    # b never saw a's request (still in term 0): a can never hear from everybody
    views = [view("a", "CANDIDATE", voted="A"), view("b", term=0)] + \
            [view(z, voted="A") for z in "cdefg"]
    assert model.meta_request_lost(views)
    # everybody in the term (or a leader, or nobody campaigning yet): not this rule's case
    assert not model.meta_request_lost([view("a", "CANDIDATE", voted="A")] +
                                       [view(z, voted="A") for z in "bcdefg"])
    assert not model.meta_request_lost(views[:1] + [view("b", term=0)] +
                                       [view("c", "LEADER", voted="C")])
    assert not model.meta_request_lost([view(z, term=0) for z in "abcdefg"])
    assert not model.meta_request_lost([])
