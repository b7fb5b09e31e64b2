"""The sandbox supervisor: owns every control-plane process of every site, and reaps them.

`python -m twinsite.sandbox.supervisor --stack S --state-dir D` (started by `twinsite sandbox up`).
As the lab's supervisor: every child is spawned from the main thread through `procs.spawn` (own
process group, SIGKILL when this process dies, even by SIGKILL), every pid and start time is
recorded in `state.json` so `down` can clean up after a crashed supervisor, and SIGTERM/SIGINT/
SIGHUP stop everything. The sandbox is ready (state.json `ready: true`) when every API server
answers, the NetworkChaos CRD is established and every node is Ready.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

from .. import procs
from ..lab import state
from ..topology import TopologyError, load_stack
from . import SandboxError, kubeconfig, pki, tools
from .plan import Ports, SitePlan, plan
from .apply import SiteApi

START_TIMEOUT_S = 120.0
ORDER = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")


def etcd_argv(t: tools.Tools, sp: SitePlan, d: Path) -> list[str]:
    p = sp.ports
    peer = f"http://127.0.0.1:{p.etcd_peer}"
    client = f"http://127.0.0.1:{p.etcd_client}"
    return [t.path("etcd"), f"--name={sp.site}", f"--data-dir={d / 'etcd'}",
            f"--listen-client-urls={client}", f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster={sp.site}={peer}", "--unsafe-no-fsync", "--log-level=warn"]


def apiserver_argv(t: tools.Tools, sp: SitePlan, k: pki.SitePki, d: Path) -> list[str]:
    return [t.path("kube-apiserver"), f"--etcd-servers=http://127.0.0.1:{sp.ports.etcd_client}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
            f"--secure-port={sp.ports.apiserver}", f"--cert-dir={d / 'apiserver'}",
            f"--tls-cert-file={k.apiserver_crt}", f"--tls-private-key-file={k.apiserver_key}",
            f"--client-ca-file={k.ca_crt}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={k.sa_pub}",
            f"--service-account-signing-key-file={k.sa_key}",
            "--service-cluster-ip-range=10.96.0.0/16", "--authorization-mode=Node,RBAC",
            "--allow-privileged=true", "--profiling=false", "--v=0"]


def _component(t, name: str, port: int, kcfg: Path) -> list[str]:
    return [t.path(name), f"--kubeconfig={kcfg}", f"--authentication-kubeconfig={kcfg}",
            f"--authorization-kubeconfig={kcfg}", "--bind-address=127.0.0.1",
            f"--secure-port={port}", "--leader-elect=false", "--profiling=false"]


def controller_manager_argv(t, sp: SitePlan, k: pki.SitePki, kcfg: Path, d: Path) -> list[str]:
    return _component(t, "kube-controller-manager", sp.ports.controller_manager, kcfg) + [
        f"--cert-dir={d / 'controller-manager'}", f"--cluster-name={sp.site}",
        f"--service-account-private-key-file={k.sa_key}", f"--root-ca-file={k.ca_crt}",
        f"--cluster-signing-cert-file={k.ca_crt}", f"--cluster-signing-key-file={k.ca_key}",
        "--use-service-account-credentials=false"]


def scheduler_argv(t, sp: SitePlan, kcfg: Path) -> list[str]:
    return _component(t, "kube-scheduler", sp.ports.scheduler, kcfg)


def kwok_argv(t: tools.Tools, sp: SitePlan, kcfg: Path) -> list[str]:
    return [t.path("kwok"), f"--kubeconfig={kcfg}",
            f"--config={','.join(str(s) for s in t.stages)}",
            "--manage-all-nodes=false",
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
            f"--server-address=127.0.0.1:{sp.ports.kwok}", "--cidr=10.244.0.0/16",
            "--node-ip=127.0.0.1"]


class Supervisor:
    def __init__(self, stack: str, state_dir: Path, per_zone: int):
        self.apis: dict = {}
        self.stack, self.dir = stack, state_dir
        self.topo = load_stack(stack)
        self.tools = tools.locate()
        if self.tools is None:
            raise SandboxError("sandbox tools are not built: run `make sandbox-tools`")
        self.sites = plan(self.topo, procs.stable_ports(Ports.COUNT * len(self.topo.sites)),
                          per_zone)
        self.children: dict[str, object] = {}  # "<site>/<component>" -> Popen
        self.stop = threading.Event()
        self.ready = False
        self.t0 = time.monotonic()
        self.phases: dict[str, float] = {}  # phase -> seconds since start (for bench/docs)

    def mark(self, phase: str) -> None:
        self.phases[phase] = round(time.monotonic() - self.t0, 2)

    def site_dir(self, sp: SitePlan) -> Path:
        return self.dir / "sites" / sp.site

    def write_state(self, **extra) -> None:
        doc = {"stack": self.stack, "state_dir": str(self.dir), "ready": self.ready,
               "supervisor": state.record(os.getpid()),
               "kubeconfig": str(self.dir / "kubeconfig"), "tools": str(self.tools.bin),
               "children": {k: state.record(p.pid) for k, p in self.children.items()},
               "sites": [{"site": s.site, "context": s.context, "server": s.server,
                          "zones": list(s.zones), "nodes": list(s.nodes),
                          "ports": {f: getattr(s.ports, f) for f in s.ports.__dataclass_fields__}}
                         for s in self.sites], **extra}
        state.write_json(self.dir / state.STATE_FILE, doc)

    def spawn(self, sp: SitePlan, name: str, argv: list[str]) -> None:
        log = self.site_dir(sp) / "logs" / f"{name}.log"
        self.children[f"{sp.site}/{name}"] = procs.spawn(argv, log=log)
        self.write_state()

    def check_children(self) -> None:
        for key, p in self.children.items():
            if p.poll() is not None:
                site, name = key.split("/")
                log = self.dir / "sites" / site / "logs" / f"{name}.log"
                raise SandboxError(f"site {site}: {name} exited ({p.returncode}): "
                                   f"{state.log_tail(log)}")

    def wait(self, what: str, ok, timeout: float) -> None:
        deadline = self.t0 + timeout
        while not self.stop.is_set():
            self.check_children()
            if ok():
                return
            if time.monotonic() > deadline:
                raise SandboxError(f"sandbox not ready after {timeout:.0f}s: waiting for {what}")
            self.stop.wait(0.1)
        raise SandboxError("stopped while starting")

    def start(self, timeout: float) -> None:
        pk, apis = {}, {}
        for sp in self.sites:
            d = self.site_dir(sp)
            (d / "logs").mkdir(parents=True, exist_ok=True)
            pk[sp.site] = pki.make_site_pki(d / "pki", sp.site)
            kubeconfig.write(d / "admin.kubeconfig", [(sp, pk[sp.site])])
            self.spawn(sp, "etcd", etcd_argv(self.tools, sp, d))
        kubeconfig.write(self.dir / "kubeconfig", [(sp, pk[sp.site]) for sp in self.sites])
        for sp in self.sites:
            u = f"http://127.0.0.1:{sp.ports.etcd_client}/health"
            self.wait(f"site {sp.site}: etcd", lambda u=u: procs.http_status(u) == 200, timeout)
            self.spawn(sp, "kube-apiserver", apiserver_argv(self.tools, sp, pk[sp.site],
                                                            self.site_dir(sp)))
        self.mark("etcd_ready")
        for sp in self.sites:
            kcfg, d = self.site_dir(sp) / "admin.kubeconfig", self.site_dir(sp)
            apis[sp.site] = api = SiteApi.from_kubeconfig(sp.site, kcfg, sp.context)
            self.wait(f"site {sp.site}: kube-apiserver /readyz", api.ready, timeout)
            self.spawn(sp, "kube-controller-manager",
                       controller_manager_argv(self.tools, sp, pk[sp.site], kcfg, d))
            self.spawn(sp, "kube-scheduler", scheduler_argv(self.tools, sp, kcfg))
            self.spawn(sp, "kwok", kwok_argv(self.tools, sp, kcfg))
            api.install_crds()
            api.create_nodes(sp)
            api.create_storage(sp)
        self.mark("apiservers_ready")
        for sp in self.sites:
            api = apis[sp.site]
            self.wait(f"site {sp.site}: NetworkChaos CRD established", api.crds_established,
                      timeout)
            self.wait(f"site {sp.site}: {len(sp.nodes)} nodes Ready",
                      lambda api=api, sp=sp: api.nodes_ready(sp.nodes), timeout)
        self.mark("nodes_ready")
        self.apis = apis
        self.ready = True
        self.write_state(phases=self.phases)

    def run(self, timeout: float) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, lambda *_: self.stop.set())
        try:
            self.start(timeout)
            while not self.stop.wait(0.5):
                self.check_children()  # a control plane that dies takes the sandbox down
                self.assign_load_balancers()
            return 0
        except SandboxError as e:
            print(f"sandbox: {e}", file=sys.stderr, flush=True)
            return 1
        finally:
            self.shutdown()

    def assign_load_balancers(self) -> None:
        for i, sp in enumerate(self.sites):
            try:
                self.apis[sp.site].assign_load_balancers(i)
            except Exception as e:  # noqa: BLE001 - an API server busy for a moment: next tick
                log_once = getattr(self, "_lb_logged", False)
                if not log_once:
                    print(f"sandbox: load-balancer addresses for {sp.site}: {e}", flush=True)
                    self._lb_logged = True

    def shutdown(self) -> None:
        self.ready = False
        for name in reversed(ORDER):  # clients first, etcd last
            for key, p in self.children.items():
                if key.endswith("/" + name):
                    procs.reap(p, timeout=5.0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m twinsite.sandbox.supervisor")
    p.add_argument("--stack", default="lab")
    p.add_argument("--state-dir", required=True)
    p.add_argument("--nodes-per-zone", type=int, default=3)
    p.add_argument("--timeout", type=float, default=START_TIMEOUT_S)
    args = p.parse_args(argv)
    d = Path(args.state_dir)
    shutil.rmtree(d / "sites", ignore_errors=True)  # a fresh sandbox: no data from a previous run
    d.mkdir(parents=True, exist_ok=True)
    try:
        sup = Supervisor(args.stack, d, args.nodes_per_zone)
    except (TopologyError, SandboxError) as e:
        print(f"sandbox: {e}", file=sys.stderr, flush=True)
        return 2
    return sup.run(args.timeout)


if __name__ == "__main__":
    sys.exit(main())
