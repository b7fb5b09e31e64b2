"""The real Pulumi engine on this machine: locate or build the pinned tools.

- `pulumi` (the CLI and engine) from the wrapper module tools/pulumi (pkg/v3 + sdk/v3, pinned);
- `pulumi-resource-kubernetes` from github.com/pulumi/pulumi-kubernetes/provider/v4 at the commit of
  release v4.25.0 (the `pulumi-kubernetes` Python SDK pyproject.toml pins). Its main package embeds
  `schema-embed.json`, which the release process generates and the module does not ship, so the
  module is copied, the provider's own generator (cmd/pulumi-resource-kubernetes/generate.go) is
  run in the copy, and the copy is built. The copy's go.mod replaces the kubernetes Go SDK with
  `../sdk` (a path in their repository); that replace becomes a require of the same release;
- `pulumi-language-python`: a launcher of `twinsite.sandbox.pulumi_langhost` (why it is
  hand-written: see that module), next to `pulumi` where the CLI looks for its language hosts;
- `pulumi-resource-pulumi-python`: a launcher of the SDK's dynamic-resource provider
  (`python -m pulumi.dynamic`), which Pulumi's release ships as a script beside the CLI.

Everything lands in ~/.cache/twinsite/tools/pulumi-KEY/bin, KEY hashing every pin and this recipe,
so a fresh clone reuses a build. `python -m twinsite.sandbox.pulumi_tools build|path|env`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

PULUMI_VERSION = "3.260.0"
K8S_VERSION = "4.25.0"
K8S_PROVIDER = "github.com/pulumi/pulumi-kubernetes/provider/v4"
K8S_PROVIDER_PSEUDO = "v4.0.0-20260115033456-f47bc2d6f199"  # the commit tagged v4.25.0
K8S_SDK = "github.com/pulumi/pulumi-kubernetes/sdk/v4"
RECIPE = 1  # bump when the build steps below change

REPO = Path(__file__).resolve().parents[2]
WRAPPER = REPO / "tools" / "pulumi"
_PY = """py="${TWINSITE_PYTHON:-}"
if [ -z "$py" ]; then
  if [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=python3; fi
fi
"""
# Launchers run with TWINSITE_PYTHON (set by `Tools.env`), else ./.venv/bin/python.
LAUNCHERS = {
    # The hand-written language host (why: twinsite/sandbox/pulumi_langhost.py).
    "pulumi-language-python": "#!/bin/sh\n" + _PY
    + 'exec "$py" -m twinsite.sandbox.pulumi_langhost "$@"\n',
    # The provider of Python dynamic resources (GeneratedPassword): the SDK's own server.
    "pulumi-resource-pulumi-python": "#!/bin/sh\n" + _PY + 'exec "$py" -u -m pulumi.dynamic "$@"\n',
}


class ToolsError(Exception):
    """The tools cannot be had: one line saying what is missing or which step failed."""


@dataclass(frozen=True)
class Tools:
    bin_dir: Path

    @property
    def pulumi(self) -> Path:
        return self.bin_dir / "pulumi"

    @property
    def provider(self) -> Path:
        return self.bin_dir / "pulumi-resource-kubernetes"

    @property
    def langhost(self) -> Path:
        return self.bin_dir / "pulumi-language-python"

    def complete(self) -> bool:
        paths = [self.pulumi, self.provider, *(self.bin_dir / n for n in LAUNCHERS)]
        return all(os.access(p, os.X_OK) for p in paths)

    def env(self, base: dict[str, str] | None = None, python: str = sys.executable) -> dict:
        """`base` (default os.environ) with these tools first on PATH, the host's Python named,
        and the CLI kept from phoning home (no update check, no telemetry)."""
        env = dict(os.environ if base is None else base)
        env["PATH"] = os.pathsep.join([str(self.bin_dir), env.get("PATH", "")])
        env["TWINSITE_PYTHON"] = python
        env.setdefault("PULUMI_SKIP_UPDATE_CHECK", "true")
        env.setdefault("PULUMI_DIY_BACKEND_NO_LEGACY_WARNING", "true")
        return env


def cache_root() -> Path:
    if given := os.environ.get("TWINSITE_TOOLS_CACHE"):
        return Path(given)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "twinsite" / "tools"


def key() -> str:
    h = hashlib.sha256()
    pins = (PULUMI_VERSION, K8S_VERSION, K8S_PROVIDER_PSEUDO, str(RECIPE), *LAUNCHERS.values())
    for part in pins:
        h.update(part.encode() + b"\0")
    for f in ("go.mod", "go.sum"):
        h.update((WRAPPER / f).read_bytes())
    return h.hexdigest()[:12]


def tools() -> Tools:
    return Tools(cache_root() / f"pulumi-{key()}" / "bin")


def locate() -> Tools | None:
    t = tools()
    return t if t.complete() else None


def go_binary() -> str | None:
    return shutil.which("go") or (p if os.access(p := "/usr/local/go/bin/go", os.X_OK) else None)


def _run(cmd: list[str], cwd: Path, env: dict, what: str) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                          preexec_fn=lambda: os.nice(10))
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise ToolsError(f"{what} failed: {' '.join(cmd[:3])}…: {tail[0]}")
    return proc.stdout


def _writable_copy(src: Path, dst: Path) -> None:
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst, copy_function=shutil.copyfile)
    for d, _, _ in os.walk(dst):
        os.chmod(d, os.stat(d).st_mode | stat.S_IWUSR)


def _build_cli(go: str, env: dict, out: Path) -> None:
    stamp = "github.com/pulumi/pulumi/sdk/v3/go/common/version.Version"
    ldflags = f"-s -w -X {stamp}=v{PULUMI_VERSION}"
    _run([go, "build", "-trimpath", "-ldflags", ldflags, "-o", str(out),
          "github.com/pulumi/pulumi/pkg/v3/cmd/pulumi"], WRAPPER, env, "building the pulumi CLI")


def _build_provider(go: str, env: dict, work: Path, out: Path) -> None:
    got = json.loads(_run([go, "mod", "download", "-json", f"{K8S_PROVIDER}@{K8S_PROVIDER_PSEUDO}"],
                          WRAPPER, env, "downloading the kubernetes provider module"))
    src = work / "provider"
    _writable_copy(Path(got["Dir"]), src)
    _run([go, "mod", "edit", f"-dropreplace={K8S_SDK}", f"-require={K8S_SDK}@v{K8S_VERSION}"],
         src, env, "pinning the kubernetes Go SDK")
    env = {**env, "GOFLAGS": "-mod=mod", "VERSION": K8S_VERSION}
    cmd_dir = src / "cmd" / "pulumi-resource-kubernetes"
    _run([go, "run", "generate.go"], cmd_dir, env, "generating schema-embed.json")
    ldflags = f"-s -w -X {K8S_PROVIDER}/pkg/version.Version={K8S_VERSION}"
    _run([go, "build", "-trimpath", "-ldflags", ldflags, "-o", str(out),
          "./cmd/pulumi-resource-kubernetes"], src, env, "building pulumi-resource-kubernetes")


def build(progress: Callable[[str], None] = print) -> Tools:
    """Build whatever of the tools the cache lacks; return them. Raises ToolsError."""
    t = tools()
    if t.complete():
        progress(f"pulumi tools: cached in {t.bin_dir}")
        return t
    go = go_binary()
    if go is None:
        raise ToolsError("no Go toolchain (`go` on PATH): install Go to build the Pulumi tools")
    t.bin_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=readonly", "CGO_ENABLED": "0"}
    work = t.bin_dir.parent / "work"
    steps = [(t.pulumi, f"pulumi CLI v{PULUMI_VERSION}", lambda o: _build_cli(go, env, o)),
             (t.provider, f"pulumi-resource-kubernetes v{K8S_VERSION}",
              lambda o: _build_provider(go, env, work, o))]
    for path, what, step in steps:
        if os.access(path, os.X_OK):
            progress(f"pulumi tools: {what}: cached")
            continue
        progress(f"pulumi tools: building {what} (cold: minutes)…")
        started = time.monotonic()
        tmp = path.with_name(path.name + ".tmp")
        step(tmp)
        os.replace(tmp, path)
        progress(f"pulumi tools: {what}: {time.monotonic() - started:.0f} s, "
                 f"{path.stat().st_size / 2**20:.0f} MiB")
    shutil.rmtree(work, ignore_errors=True)
    for name, text in LAUNCHERS.items():
        (t.bin_dir / name).write_text(text)
        (t.bin_dir / name).chmod(0o755)
    return t


def main(argv: list[str]) -> int:
    cmd = argv[0] if argv else "build"
    try:
        if cmd == "build":
            t = build()
            print(t.bin_dir)
        elif cmd in ("path", "env"):
            t = locate()
            if t is None:
                raise ToolsError("the Pulumi tools are not built: run `make pulumi-tools`")
            if cmd == "path":
                print(t.bin_dir)
            else:
                env = t.env({"PATH": os.environ.get("PATH", "")})
                for k in ("PATH", "TWINSITE_PYTHON", "PULUMI_SKIP_UPDATE_CHECK"):
                    print(f"export {k}={env[k]!r}".replace("'", '"'))
        else:
            raise ToolsError(f"unknown command {cmd!r}: build, path or env")
    except ToolsError as e:
        print(f"pulumi tools: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
