"""Shared fixtures: a real 7-server lab JetStream cluster and real `twinsite talk serve` gateways.

- `lab_topology`   the `lab` stack's Topology (session).
- `nats_cluster`   a running LocalNatsCluster of the lab topology (session; do not kill its
                   servers — tests that break a cluster start their own, see `make_cluster`).
- `make_cluster()` factory: a fresh LocalNatsCluster(topology, dir) started and reaped for you.
- `start_gateway(site, nats_urls=None, cluster=None, extra_args=(), token_file=True, env=None)
  -> base_url`
                   starts a gateway subprocess on a free port (default: its site's servers of
                   `nats_cluster` first, then the others), waits for /readyz 200 (pass
                   wait_ready=False to skip), and reaps it at the end of the test.
                   `start_gateway.procs[base_url]` is the Popen, `.logs[base_url]` its log path.
- `shared_gateway` base URL of one pangyo gateway on `nats_cluster` for the whole session.
- `talk_token_file` / `talk_token` / `auth_headers`
                   the API token every started gateway accepts (session; a 0600 file), and the
                   `Authorization` header that carries it.

`make test-parallel` runs two pytest-xdist workers (`-n 2 --dist loadfile`: a module's tests, and
so its module-scoped lab or workspace, stay in one worker; the three sandbox modules share one
worker, see `pytest_xdist_make_scheduler`, because xdist 3.8's groups have no effect under pytest
9.2). Session fixtures are per worker (`nats_cluster`: seconds). Files run in their name order:
a slowest-first ordering tried at an earlier stop ran test_workload before the files that share
`nats_cluster` and `shared_gateway`, and 12 of those then got 503 ("no stream leader answered")
on a clean checkout - a test there leaves the shared cluster degraded (not yet isolated).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from twinsite import capacity, procs, topology
from twinsite.natscluster import LocalNatsCluster
from twinsite.talk import auth

ROOT = Path(__file__).resolve().parent.parent
# gateways run the shard count the lab drills (the deployed count is the capacity model's)
LAB_SHARDS = capacity.lab_shard_count(topology.load_stack("lab", root=ROOT))


# The modules that run Kubernetes control planes: one sandbox at a time on this machine.
SANDBOX_MODULES = frozenset({"tests/test_sandbox.py", "tests/test_k8s_driver.py",
                             "tests/test_pulumi_sandbox.py"})


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """`make test-parallel` (`--dist loadfile`): a module's tests stay on one worker, and the
    sandbox modules share one. Two sandboxes at once (one per worker) on 2 cores made the fault
    driver's restores miss their 60 s readiness wait, and the shared session sandbox of
    test_sandbox and test_k8s_driver was started twice (xdist_group has no effect here)."""
    if config.getoption("dist", None) != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class SandboxModulesTogether(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = super()._split_scope(nodeid)
            return "sandbox modules" if path in SANDBOX_MODULES else path

    return SandboxModulesTogether(config, log)


@pytest.fixture(scope="session")
def lab_topology():
    return topology.load_stack("lab", root=ROOT)


@pytest.fixture(scope="session")
def nats_cluster(lab_topology, tmp_path_factory):
    cluster = LocalNatsCluster(lab_topology, tmp_path_factory.mktemp("nats-lab"))
    cluster.start(timeout=60)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def talk_token_file(tmp_path_factory) -> Path:
    return auth.write(tmp_path_factory.mktemp("talk-token") / "token")


@pytest.fixture(scope="session")
def talk_token(talk_token_file) -> str:
    return auth.read_token(talk_token_file)


@pytest.fixture(scope="session")
def auth_headers(talk_token) -> dict[str, str]:
    return auth.header(talk_token)


@pytest.fixture
def make_cluster(lab_topology, tmp_path):
    started: list[LocalNatsCluster] = []

    def make(topo=None, name: str = "cluster") -> LocalNatsCluster:
        c = LocalNatsCluster(topo or lab_topology, tmp_path / f"{name}{len(started)}")
        started.append(c)
        c.start(timeout=60)
        return c

    try:
        yield make
    finally:
        for c in started:
            c.stop()


def site_first_urls(cluster: LocalNatsCluster, site: str) -> list[str]:
    """The site's own servers first, then the rest: the order a gateway should try them in."""
    own = cluster.client_urls(site)
    return own + [u for u in cluster.client_urls() if u not in own]


class GatewayStarter:
    """Starts gateway subprocesses and remembers them so `reap_all` can stop every one."""

    def __init__(self, request, log_dir: Path):
        self.request, self.log_dir = request, log_dir
        self.procs: dict[str, object] = {}
        self.logs: dict[str, Path] = {}

    def __call__(self, site: str, nats_urls: list[str] | None = None, *, cluster=None,
                 extra_args=(), wait_ready: bool = True, timeout: float = 60.0,
                 token_file: bool = True, env: dict | None = None) -> str:
        if nats_urls is None:
            cluster = cluster or self.request.getfixturevalue("nats_cluster")
            nats_urls = site_first_urls(cluster, site)
        [port] = procs.stable_ports(1)  # bound later, by the gateway
        base = f"http://127.0.0.1:{port}"
        log = self.log_dir / f"gateway-{site}-{port}.log"
        argv = [sys.executable, "-m", "twinsite.cli", "talk", "serve", "--site", site,
                "--nats", ",".join(nats_urls), "--listen", f"127.0.0.1:{port}",
                "--stack", "lab", "--shards", str(LAB_SHARDS), *extra_args]
        if token_file:  # the suite's token (pass token_file=False to set one through `env`)
            argv += ["--token-file", str(self.request.getfixturevalue("talk_token_file"))]
        proc = procs.spawn(argv, log=log, cwd=ROOT, env={**os.environ, **env} if env else None)
        self.procs[base], self.logs[base] = proc, log

        def up() -> bool:
            if proc.poll() is not None:
                raise procs.ChildExited(f"gateway exited ({proc.returncode}): "
                                        f"{log.read_text(errors='replace')[-2000:]}")
            return procs.http_status(base + ("/readyz" if wait_ready else "/healthz")) == 200

        procs.wait_until(up, timeout, interval=0.1, what=f"gateway {base} ready")
        return base

    def reap_all(self) -> None:
        for proc in self.procs.values():
            procs.reap(proc, timeout=5.0)


@pytest.fixture
def start_gateway(request, tmp_path):
    starter = GatewayStarter(request, tmp_path)
    try:
        yield starter
    finally:
        starter.reap_all()


@pytest.fixture(scope="session")
def shared_gateway(request, tmp_path_factory, nats_cluster) -> str:
    """Base URL of one pangyo gateway on `nats_cluster`, shared by the whole session (read-mostly
    tests; do not stop it)."""
    starter = GatewayStarter(request, tmp_path_factory.mktemp("shared-gateway"))
    try:
        yield starter("pangyo", cluster=nats_cluster)
    finally:
        starter.reap_all()
