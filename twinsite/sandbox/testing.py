"""Pytest support: one shared sandbox per test session, for every module that needs clusters.

    from twinsite.sandbox import testing

    @pytest.fixture(scope="module")
    def sandbox():
        return testing.shared()          # Sandbox(kubeconfig, contexts, state)

Without Go the tests skip with one line (how to enable them); with CI=true a missing toolchain or
a failed build fails instead. The tools are built on first use when the cache lacks them. The
sandbox is started once (tied to this process: if pytest dies, the kernel kills it) and stopped at
exit.
"""

from __future__ import annotations

import atexit
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from . import SandboxError, client, tools

_shared: dict[str, "Sandbox"] = {}


@dataclass(frozen=True)
class Sandbox:
    stack: str
    state_dir: Path
    kubeconfig: Path
    contexts: dict[str, str]  # site -> kubeconfig context
    state: dict

    def api(self, site: str):
        from .apply import SiteApi

        return SiteApi.from_kubeconfig(site, self.kubeconfig, self.contexts[site])


def on_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


NO_GO = "sandbox tests need a Go toolchain (>= 1.26) on PATH; then `make sandbox-tools`"


def skip_module_without_go() -> None:
    """At a test module's top: one skip line for the whole module. On CI nothing is skipped:
    `require_tools` (an autouse fixture) fails each test instead, and the other modules run."""
    import pytest

    if tools.locate() is None and not tools.go_binary() and not on_ci():
        pytest.skip(NO_GO, allow_module_level=True)


def require_tools() -> tools.Tools:
    import pytest

    found = tools.locate()
    if found:
        return found
    if not tools.go_binary():
        if on_ci():
            pytest.fail(NO_GO, pytrace=False)
        pytest.skip(NO_GO)
    try:
        return tools.build(lambda m: print(m, flush=True))
    except SandboxError as e:
        pytest.fail(f"building the sandbox tools failed: {e}", pytrace=False)


def start(stack: str = "lab", state_dir: Path | None = None, **kw) -> Sandbox:
    require_tools()
    d = Path(state_dir or tempfile.mkdtemp(prefix=f"twinsite-sandbox-{stack}-"))
    st = client.up(stack, d, die_with_parent=True, **kw)
    return Sandbox(stack, d, Path(st["kubeconfig"]),
                   {s["site"]: s["context"] for s in st["sites"]}, st)


def shared(stack: str = "lab") -> Sandbox:
    """The session's sandbox for `stack` (started on first call, stopped at exit)."""
    if stack not in _shared:
        sb = _shared[stack] = start(stack)
        atexit.register(client.down, sb.state_dir)
    return _shared[stack]
