"""Run schemathesis (`st run`) against a gateway's /openapi.json and read its JSON report.

The test suite (tests/test_fuzz_api.py) and `make fuzz` (fuzz/__main__.py) share this: all
checks, every phase (coverage, fuzzing, stateful), the hooks of fuzz/hooks.py (bounded SSE
streams). The fuzzer runs as its own process: its CLI is schemathesis's stable interface, and a
crash of the fuzzer cannot take the caller with it.

The gateway's bearer token reaches schemathesis through its OpenAPI-aware auth config
(`[auth.openapi.bearer]`, the document's securitySchemes name) reading an environment variable, so
the token is on no command line; with it set, the `ignored_auth` check also probes every secured
operation without and with a wrong token and expects the 401.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REQUEST_TIMEOUT_S = 10.0  # generous: a fuzzed request is never slow, a loaded machine can be


@dataclass(frozen=True)
class Outcome:
    exit_code: int
    seed: int | None
    cases: int
    failures: int  # unique failures of checks
    errors: int  # runtime errors (the fuzzer could not run an operation)
    operations: int
    tested: int
    seconds: float
    complete: bool
    log: Path

    @property
    def ok(self) -> bool:
        return (self.exit_code == 0 and self.operations > 0 and self.failures == 0
                and self.errors == 0 and self.tested == self.operations)

    def line(self) -> str:
        return (f"{self.cases} cases, {self.failures} failures, {self.errors} errors, "
                f"{self.tested}/{self.operations} operations, seed {self.seed}, "
                f"{self.seconds:.0f}s")


TOKEN_ENV = "TWINSITE_FUZZ_TOKEN"


def config_text() -> str:
    from twinsite.talk import auth
    return f'[auth.openapi.{auth.SCHEME}]\nbearer = "${{{TOKEN_ENV}}}"\n'


def command(base_url: str, report: Path, *, seed: int | None, max_examples: int,
            max_time_s: int | None = None, workers: int = 1,
            config: Path | None = None) -> list[str]:
    argv = [sys.executable, "-m", "schemathesis.cli"]
    if config is not None:
        argv += ["--config-file", str(config)]
    argv += ["run", f"{base_url}/openapi.json",
            "--checks", "all", "--max-examples", str(max_examples), "--workers", str(workers),
            "--request-timeout", str(REQUEST_TIMEOUT_S), "--no-color",
            "--generation-database", "none",  # the same seed gives the same run
            "--report", "json", "--report-json-path", str(report)]
    if seed is not None:
        argv += ["--seed", str(seed)]
    if max_time_s is not None:
        argv += ["--max-time", str(max_time_s)]
    return argv


def run(base_url: str, out_dir: Path, *, token: str, seed: int | None, max_examples: int,
        max_time_s: int | None = None, workers: int = 1, timeout_s: float | None = None,
        echo: bool = False) -> Outcome:
    """One schemathesis run with the gateway's API `token`; its console output goes to
    out_dir/schemathesis.log (and to our stdout with `echo`)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    report, log = out_dir / "schemathesis.json", out_dir / "schemathesis.log"
    report.unlink(missing_ok=True)
    config = out_dir / "schemathesis.toml"  # names the variable, holds no secret
    config.write_text(config_text())
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "fuzz.hooks", TOKEN_ENV: token,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    argv = command(base_url, report, seed=seed, max_examples=max_examples,
                   max_time_s=max_time_s, workers=workers, config=config)
    with open(log, "w") as f:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE if echo else f,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                cwd=str(ROOT), text=True)
        try:
            if echo:
                for line in proc.stdout:
                    f.write(line)
                    sys.stdout.write(line)
            proc.wait(timeout=timeout_s)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return read_report(report, proc.returncode, log)


def read_report(report: Path, exit_code: int, log: Path) -> Outcome:
    try:
        d = json.loads(report.read_text())
    except (OSError, ValueError):
        d = {}
    ops, cases = d.get("operations") or {}, d.get("test_cases") or {}
    return Outcome(exit_code=exit_code, seed=d.get("seed"),
                   cases=int(cases.get("generated", 0)),
                   failures=len(d.get("failures") or []), errors=len(d.get("errors") or []),
                   operations=int(ops.get("total", 0)), tested=int(ops.get("tested", 0)),
                   seconds=float(d.get("running_time") or 0.0), complete=bool(d.get("complete")),
                   log=log)
