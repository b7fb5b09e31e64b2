"""Build and find the sandbox's control-plane binaries (tools/kube, pinned by its go.mod).

`python -m twinsite.sandbox.tools build` (or `make sandbox-tools`) builds them into a per-user
cache keyed by a hash of go.mod, go.sum and the tool list, so every clone with the same pins
reuses one build. kwok's own default Stage files (node initialise/heartbeat, pod ready/complete/
delete) are taken from the pinned kwok module and kept beside the binaries.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..topology import project_root
from . import SandboxError

# binary name -> Go package (the etcd main package is the server module's root)
TOOLS: dict[str, str] = {
    "etcd": "go.etcd.io/etcd/server/v3",
    "kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver",
    "kube-controller-manager": "k8s.io/kubernetes/cmd/kube-controller-manager",
    "kube-scheduler": "k8s.io/kubernetes/cmd/kube-scheduler",
    "kwok": "sigs.k8s.io/kwok/cmd/kwok",
}
BUILD_FLAGS = ("-trimpath", "-buildvcs=false")
# What Kubernetes' own build (hack/lib/version.sh) stamps: without it the binaries report
# v0.0.0-master, which clients that parse the server version (the Pulumi provider) refuse.
VERSION_PACKAGES = ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
KWOK_STAGES = ("node/fast/node-initialize.yaml", "node/heartbeat/node-heartbeat.yaml",
               "pod/fast/pod-ready.yaml", "pod/fast/pod-complete.yaml", "pod/fast/pod-delete.yaml")
DONE = "complete"


@dataclass(frozen=True)
class Tools:
    root: Path

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    def path(self, name: str) -> str:
        return str(self.bin / name)

    @property
    def stages(self) -> list[Path]:
        return sorted((self.root / "kwok-stages").glob("*.yaml"))


def module_dir() -> Path:
    return project_root() / "tools" / "kube"


def cache_key(mod: Path | None = None) -> str:
    mod = mod or module_dir()
    h = hashlib.sha256()
    for name in ("go.mod", "go.sum"):
        h.update((mod / name).read_bytes())
    h.update(repr((sorted(TOOLS.items()), BUILD_FLAGS, ldflags(mod), KWOK_STAGES)).encode())
    return h.hexdigest()[:16]


def kube_version(mod: Path | None = None) -> str:
    """The k8s.io/kubernetes version go.mod pins, e.g. v1.36.3."""
    for line in ((mod or module_dir()) / "go.mod").read_text().splitlines():
        parts = line.split()
        parts = parts[1:] if parts[:1] == ["require"] else parts
        if len(parts) >= 2 and parts[0] == "k8s.io/kubernetes" and parts[1].startswith("v1."):
            return parts[1]
    raise SandboxError("tools/kube/go.mod does not pin k8s.io/kubernetes")


def ldflags(mod: Path | None = None) -> str:
    v = kube_version(mod)
    major, minor = v[1:].split(".")[:2]
    stamps = {"gitVersion": v, "gitMajor": major, "gitMinor": minor, "gitTreeState": "clean"}
    return " ".join(["-s"] + [f"-X {pkg}.{k}={val}" for pkg in VERSION_PACKAGES
                              for k, val in stamps.items()])


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "twinsite" / "tools" / f"kube-{cache_key()}"


def locate() -> Tools | None:
    """The built tools for the current pins, or None when they are not built yet."""
    t = Tools(cache_root())
    if (t.root / DONE).is_file() and all(Path(t.path(n)).is_file() for n in TOOLS):
        return t
    return None


def go_binary() -> str | None:
    return shutil.which("go")


def _go(args: list[str], cwd: Path) -> str:
    r = subprocess.run([go_binary(), *args], cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["no output"])[-1]
        raise SandboxError(f"go {' '.join(args[:2])} failed in {cwd}: {last}")
    return r.stdout


def build(progress=print) -> Tools:
    """Build every tool (cached); raise SandboxError with one line on any failure."""
    found = locate()
    if found:
        return found
    if not go_binary():
        raise SandboxError("Go toolchain not found: install Go >= 1.26 to build the sandbox "
                           "tools (`make sandbox-tools`)")
    mod, root = module_dir(), cache_root()
    tmp = root.with_name(root.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "bin").mkdir(parents=True)
    t0 = time.monotonic()
    progress(f"sandbox tools: downloading modules for {mod} ...")
    _go(["mod", "download"], mod)
    progress(f"sandbox tools: building {', '.join(TOOLS)} (a cold build takes minutes) ...")
    _compile(mod, tmp / "bin", progress, t0)
    os.replace(tmp / "bin" / "server", tmp / "bin" / "etcd")  # go drops the /v3: "server"
    kwok_dir = Path(_go(["list", "-m", "-f", "{{.Dir}}", "sigs.k8s.io/kwok"], mod).strip())
    (tmp / "kwok-stages").mkdir()
    for rel in KWOK_STAGES:
        shutil.copyfile(kwok_dir / "kustomize" / "stage" / rel,
                        tmp / "kwok-stages" / Path(rel).name)
    (tmp / DONE).write_text(_go(["list", "-m", "all"], mod))
    shutil.rmtree(root, ignore_errors=True)
    os.replace(tmp, root)
    size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    progress(f"sandbox tools: built in {time.monotonic() - t0:.0f}s into {root} "
             f"({size / 2**20:.0f} MiB)")
    return Tools(root)


def _compile(mod: Path, out: Path, progress, t0: float) -> None:
    argv = ["nice", "-n", "10", go_binary(), "build", "-v", *BUILD_FLAGS,
            f"-ldflags={ldflags(mod)}", "-o", f"{out}/",
            *TOOLS.values()]
    proc = subprocess.Popen(argv, cwd=mod, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            text=True)
    count, tail = 0, []
    for line in proc.stderr:
        count += 1
        tail = (tail + [line.rstrip()])[-5:]
        if count % 250 == 0:
            progress(f"sandbox tools: {count} packages compiled ({time.monotonic() - t0:.0f}s)")
    if proc.wait() != 0:
        raise SandboxError(f"go build of the sandbox tools failed: {' | '.join(tail)}")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv[:1] == ["path"]:
            t = locate()
            if not t:
                print("sandbox tools are not built: run `make sandbox-tools`", file=sys.stderr)
                return 1
            print(t.bin)
            return 0
        t = build(lambda m: print(m, flush=True))
        print(f"sandbox tools ready in {t.bin}")
        return 0
    except SandboxError as e:
        print(f"twinsite sandbox: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
