"""The lab supervisor's event loop relays every cross-zone byte of the lab (the link fabric), so
process work of a fault - reaping killed servers, spawning restored ones - must not run on it:
while it did, a site's power-on paused the network of the surviving sites too (found by the soak:
rooms led by ansan stalled 1.1-1.3 s exactly while pangyo was being restarted).

The test drives the supervisor's real fault handlers on a real event loop with the process work
replaced by a probe that only returns once the loop has run a callback meanwhile: on the loop it
would deadlock (the probe gives up after 30 s and the test fails), off the loop it returns at once.
"""

from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace

from twinsite import faults, topology
from twinsite.lab.fabric import Link
from twinsite.lab.supervisor import Supervisor


def supervisor(tmp_path) -> Supervisor:
    topo = topology.load_stack("lab")
    sup = Supervisor(topo, tmp_path)
    sup.edge_links = {g.name: Link(f"edge~{g.name}") for g in sup.gateways}
    sup.cluster = SimpleNamespace(stores=None,
                                  nodes={z.name: SimpleNamespace(running=False)
                                         for z in topo.zones})
    return sup


def loop_stays_free(loop: asyncio.AbstractEventLoop, calls: list):
    def probe(zone):
        ran = threading.Event()
        loop.call_soon_threadsafe(ran.set)
        assert ran.wait(30), "the supervisor's event loop was blocked by process work"
        calls.append((zone, threading.current_thread() is not threading.main_thread()))
        return [zone]
    return probe


def test_power_cut_and_restore_do_process_work_off_the_fabric_loop(tmp_path):
    sup = supervisor(tmp_path)
    calls: list = []

    async def scenario():
        loop = asyncio.get_running_loop()
        sup.kill_zone_procs = loop_stays_free(loop, calls)
        sup.start_zone = loop_stays_free(loop, calls)

        async def converged(timeout):
            return None
        sup.wait_converged = converged
        topo = sup.topo
        down = await sup._down(faults.resolve(faults.SitePowerLoss("pangyo"), topo))
        up = await sup._restore(faults.resolve(faults.Restore("pangyo"), topo,
                                               frozenset(sup.powered_off)))
        return down, up

    down, up = asyncio.run(asyncio.wait_for(scenario(), timeout=120))
    pangyo = ["pangyo-a", "pangyo-b", "pangyo-c"]
    assert down["killed"] == pangyo
    assert up["started"] == pangyo and not sup.powered_off
    assert [z for z, _ in calls] == pangyo * 2 and all(off for _, off in calls)
    assert all(not sup.edge_links[g.name].silent for g in sup.gateways)  # power is back


def test_a_paused_fabric_loop_is_logged_with_its_length(caplog):
    """The watchdog that tells a whole-lab stall (this loop relays every cross-zone byte) from a
    stall of NATS: a 0.3 s block of the loop is logged with its length."""
    import time

    from twinsite.lab.supervisor import watch_loop_lag

    async def scenario():
        dog = asyncio.create_task(watch_loop_lag(period=0.02))
        await asyncio.sleep(0.1)
        time.sleep(0.3)  # the loop is blocked, as by a fork or a reap on it
        await asyncio.sleep(0.05)
        dog.cancel()

    with caplog.at_level("WARNING", logger="twinsite.lab"):
        asyncio.run(scenario())
    paused = [float(r.getMessage().split()[-1].rstrip("s")) for r in caplog.records
              if "fabric loop paused" in r.getMessage()]
    assert paused and max(paused) >= 0.25
