"""`pulumi-language-python`: the Python language host the Pulumi CLI starts to run a Python program
or a Python policy pack.

Why hand-written: Pulumi's own host is a Go module
(github.com/pulumi/pulumi/sdk/python/cmd/pulumi-language-python/v3) that the Go module proxy
refuses here (403 for every version), and the CLI built from pkg/v3 cannot run a Python program
without a host. The gRPC contract (the LanguageRuntime service) ships with the `pulumi` wheel as
generated stubs, so this module serves it with them and does what Pulumi's host does for the cases
twinsite needs: `Run` starts `pulumi_exec.py` in the program's virtualenv, `RunPlugin` runs a policy
pack's `__main__.py` and streams its output back, `GetRequiredPackages` reads the
`pulumi-plugin.json` of the installed provider SDKs. Only pip virtualenvs; no typechecker, debugger,
code generation or packing (those answer UNIMPLEMENTED, as a missing feature should).

Protocol: started as `pulumi-language-python [flags] ENGINE_ADDRESS`, it prints the port it serves
on as the first line of stdout; the CLI kills it when done (it also dies with its parent).
"""

from __future__ import annotations

import ctypes
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
from google.protobuf import empty_pb2, json_format
from pulumi.runtime.proto import language_pb2, language_pb2_grpc, plugin_pb2

VERSION = "3.260.0"  # the CLI this host is built to serve (tools/pulumi/go.mod)
EXEC = Path(__file__).with_name("pulumi_exec.py")
NO_PLUGIN = {"pulumi-policy", "pulumi_policy", "pulumi-esc-sdk", "pulumi_esc_sdk"}

# Run in the program's Python: every installed distribution, with its pulumi-plugin.json if any.
_LIST = r"""
import json, importlib.metadata as md
out = []
for d in md.distributions():
    name = d.metadata["Name"]
    f = d.locate_file(name.replace("-", "_") + "/pulumi-plugin.json")
    try:
        plugin = json.loads(open(f).read())
    except (OSError, ValueError):
        plugin = None
    out.append({"name": name, "version": d.version, "plugin": plugin})
print(json.dumps(out))
"""


class HostError(Exception):
    """A request the host cannot serve; one line for the user."""


@dataclass(frozen=True)
class Python:
    exe: str
    venv: str | None

    def env(self, base: dict[str, str]) -> dict[str, str]:
        """`base` with this virtualenv activated (as `source bin/activate` would)."""
        env = dict(base)
        if self.venv:
            env["VIRTUAL_ENV"] = self.venv
            env["PATH"] = os.pathsep.join([str(Path(self.venv) / "bin"), env.get("PATH", "")])
            env.pop("PYTHONHOME", None)
        return env


def resolve_python(info: language_pb2.ProgramInfo, default_venv: str | None = None) -> Python:
    """The interpreter named by the project's `runtime.options.virtualenv` (relative to its root
    directory), else `PULUMI_PYTHON_CMD` or python3 from PATH."""
    options = json_format.MessageToDict(info.options) if info.HasField("options") else {}
    venv = options.get("virtualenv") or default_venv
    if venv:
        root = Path(venv) if os.path.isabs(venv) else Path(info.root_directory) / venv
        exe = root / "bin" / "python"
        if not exe.exists():
            raise HostError(f"virtualenv {root} has no bin/python: create it (`make setup`)")
        return Python(str(exe), str(root))
    exe = os.environ.get("PULUMI_PYTHON_CMD") or shutil.which("python3") or shutil.which("python")
    if not exe:
        raise HostError("no python3 on PATH and no virtualenv option in the project")
    return Python(exe, None)


def installed(py: Python) -> list[dict]:
    out = subprocess.run([py.exe, "-c", _LIST], capture_output=True, text=True,
                         env=py.env(dict(os.environ)), check=False)
    if out.returncode != 0:
        raise HostError(f"cannot list packages of {py.exe}: {out.stderr.strip()[-300:]}")
    return json.loads(out.stdout)


def required_packages(dists: list[dict]) -> list[plugin_pb2.PackageDependency]:
    """The resource plugins the program's Pulumi SDKs need (as Pulumi's host decides them)."""
    deps = []
    for d in sorted(dists, key=lambda d: d["name"]):
        name, plugin = d["name"], d["plugin"]
        if name in NO_PLUGIN or not (plugin or name.startswith(("pulumi-", "pulumi_"))):
            continue
        if plugin is not None and not plugin.get("resource", False):
            continue
        plugin = plugin or {}
        version = plugin.get("version") or d["version"]
        if not plugin.get("version") and not all(p.isdigit() for p in version.split(".")):
            continue  # a pre-release whose plugin version cannot be derived: skipped, like Pulumi
        deps.append(plugin_pb2.PackageDependency(
            name=plugin.get("name") or name.removeprefix("pulumi-"), kind="resource",
            version=version if version.startswith("v") else f"v{version}",
            server=plugin.get("server", "")))
    return deps


def exec_args(req: language_pb2.RunRequest, engine: str) -> list[str]:
    pairs = [("monitor", req.monitor_address), ("engine", engine), ("project", req.project),
             ("root_directory", req.info.root_directory), ("stack", req.stack), ("pwd", req.pwd),
             ("dry_run", "true" if req.dryRun else "false"), ("parallel", str(req.parallel)),
             ("organization", req.organization)]
    args = [a for k, v in pairs if v for a in (f"--{k}", v)]
    return [*args, req.info.entry_point or ".", *req.args]


def _pump(stream, kind: str, out: queue.Queue) -> None:
    while chunk := os.read(stream.fileno(), 65536):
        out.put((kind, chunk))
    out.put((kind, None))


class LanguageHost(language_pb2_grpc.LanguageRuntimeServicer):
    def __init__(self, engine: str):
        self.engine = engine

    def _fail(self, context, err: HostError):
        context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(err))

    def Handshake(self, request, context):
        self.engine = request.engine_address or self.engine
        return language_pb2.LanguageHandshakeResponse()

    def GetPluginInfo(self, request, context):
        return plugin_pb2.PluginInfo(version=VERSION)

    def GetRequiredPackages(self, request, context):
        try:
            deps = required_packages(installed(resolve_python(request.info)))
        except HostError as e:
            self._fail(context, e)
        return language_pb2.GetRequiredPackagesResponse(packages=deps)

    def GetProgramDependencies(self, request, context):
        try:
            dists = installed(resolve_python(request.info))
        except HostError as e:
            self._fail(context, e)
        return language_pb2.GetProgramDependenciesResponse(dependencies=[
            language_pb2.DependencyInfo(name=d["name"], version=d["version"]) for d in dists])

    def About(self, request, context):
        try:
            py = resolve_python(request.info) if request.HasField("info") else resolve_python(
                language_pb2.ProgramInfo())
        except HostError as e:
            self._fail(context, e)
        out = subprocess.run([py.exe, "-c", "import sys; print(sys.version.split()[0])"],
                             capture_output=True, text=True, check=False)
        return language_pb2.AboutResponse(executable=py.exe, version=out.stdout.strip())

    def InstallDependencies(self, request, context):
        # The project's dependencies are pinned in pyproject.toml and installed by `make setup`.
        try:
            py = resolve_python(request.info, "venv" if request.is_plugin else None)
        except HostError as e:
            self._fail(context, e)
        yield language_pb2.InstallDependenciesResponse(
            stdout=f"Using {py.exe}; dependencies are installed by `make setup`.\n".encode())

    def RuntimeOptionsPrompts(self, request, context):
        return language_pb2.RuntimeOptionsResponse()

    def Cancel(self, request, context):
        return empty_pb2.Empty()

    def Run(self, request, context):
        try:
            py = resolve_python(request.info)
        except HostError as e:
            return language_pb2.RunResponse(error=str(e))
        env = py.env(dict(os.environ))
        env["PULUMI_CONFIG"] = json.dumps(dict(request.config))
        env["PULUMI_CONFIG_SECRET_KEYS"] = json.dumps(list(request.configSecretKeys))
        # stdout/stderr stay this process's: the CLI shows them as the program's output.
        proc = subprocess.Popen([py.exe, "-u", str(EXEC), *exec_args(request, self.engine)],
                                env=env)
        context.add_callback(lambda: proc.poll() is None and proc.terminate())
        code = proc.wait()
        if code == 0:
            return language_pb2.RunResponse()
        if code == 32:  # pulumi_exec.REPORTED: the engine already has the message
            return language_pb2.RunResponse(bail=True)
        return language_pb2.RunResponse(error=f"program exited with non-zero exit code: {code}")

    def RunPlugin(self, request, context):
        """A plugin written in Python (here: the policy pack), run as `python DIR ARGS...`."""
        try:
            py = resolve_python(request.info, "venv")
            main = Path(request.info.program_directory) / "__main__.py"
            if not main.exists():
                raise HostError(f"plugin {request.info.program_directory} has no __main__.py")
        except HostError as e:
            self._fail(context, e)
        env = py.env(dict(os.environ))
        env.update(kv.split("=", 1) for kv in request.env if "=" in kv)
        env["PYTHONUNBUFFERED"] = "1"  # the CLI waits for the plugin's port line
        proc = subprocess.Popen([py.exe, request.info.program_directory, *request.args],
                                cwd=request.pwd or None, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        context.add_callback(lambda: proc.poll() is None and proc.terminate())
        chunks: queue.Queue = queue.Queue()
        for stream, kind in ((proc.stdout, "stdout"), (proc.stderr, "stderr")):
            threading.Thread(target=_pump, args=(stream, kind, chunks), daemon=True).start()
        open_streams = 2
        while open_streams:
            kind, chunk = chunks.get()
            if chunk is None:
                open_streams -= 1
            else:
                yield language_pb2.RunPluginResponse(**{kind: chunk})
        yield language_pb2.RunPluginResponse(exitcode=proc.wait())


def _die_with_parent() -> None:
    """Linux: get SIGTERM when the CLI that started us dies, so no host outlives it."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    positional = [a for a in argv if not a.startswith("-")]
    engine = positional[0] if positional else ""
    _die_with_parent()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8),
                         options=[("grpc.max_receive_message_length", 400 * 1024 * 1024)])
    language_pb2_grpc.add_LanguageRuntimeServicer_to_server(LanguageHost(engine), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    for sig in (signal.SIGTERM, signal.SIGINT):  # the CLI stops its plugins with SIGINT
        signal.signal(sig, lambda *_: server.stop(0))
    server.wait_for_termination()
    return 0


if __name__ == "__main__":
    sys.exit(main())
