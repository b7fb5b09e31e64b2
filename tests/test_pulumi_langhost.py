"""The hand-written Python language host, over real gRPC (no Go toolchain needed).

The host runs as the CLI starts it (`python -m twinsite.sandbox.pulumi_langhost ENGINE`, port on
the first stdout line); the engine-facing tests are in test_pulumi_engine.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from google.protobuf import empty_pb2, struct_pb2
from pulumi.runtime.proto import language_pb2, language_pb2_grpc

from twinsite.sandbox import pulumi_langhost as lh

ROOT = Path(__file__).resolve().parent.parent


def dist(name, version, plugin=None):
    return {"name": name, "version": version, "plugin": plugin}


def test_required_packages_follow_pulumis_rules():
    deps = lh.required_packages([
        dist("pulumi", "3.260.0"),
        dist("pulumi_kubernetes", "4.25.0", {"resource": True, "name": "kubernetes",
                                              "version": "4.25.0"}),
        dist("pulumi_policy", "1.21.0"),
        dist("pulumi-tls", "5.0.1"),  # no pulumi-plugin.json: name and version derived
        dist("pulumi-nightly", "1.0.0a17"),  # a pre-release: plugin version not derivable
        dist("pulumi_esc_sdk", "0.1.0", {"resource": False}),
        dist("requests", "2.32.0"),
    ])
    assert [(d.name, d.version, d.kind) for d in deps] == [
        ("tls", "v5.0.1", "resource"), ("kubernetes", "v4.25.0", "resource")]


def test_exec_args_carry_every_setting():
    req = language_pb2.RunRequest(
        monitor_address="127.0.0.1:1", project="twinsite", stack="lab", pwd="/p", dryRun=True,
        parallel=16, organization="organization", args=["x"],
        info=language_pb2.ProgramInfo(root_directory="/r", program_directory="/p",
                                      entry_point="."))
    assert lh.exec_args(req, "127.0.0.1:2") == [
        "--monitor", "127.0.0.1:1", "--engine", "127.0.0.1:2", "--project", "twinsite",
        "--root_directory", "/r", "--stack", "lab", "--pwd", "/p", "--dry_run", "true",
        "--parallel", "16", "--organization", "organization", ".", "x"]


@pytest.fixture
def host():
    proc = subprocess.Popen([sys.executable, "-m", "twinsite.sandbox.pulumi_langhost",
                             "127.0.0.1:9"], stdout=subprocess.PIPE, cwd=ROOT)
    try:
        port = int(proc.stdout.readline())
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield language_pb2_grpc.LanguageRuntimeStub(channel)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def info(root: Path, **options) -> language_pb2.ProgramInfo:
    opts = struct_pb2.Struct()
    opts.update(options)
    return language_pb2.ProgramInfo(root_directory=str(root), program_directory=str(root),
                                    entry_point=".", options=opts)


def test_host_reports_the_installed_kubernetes_sdk(host):
    assert host.GetPluginInfo(empty_pb2.Empty()).version == lh.VERSION
    venv = str(Path(sys.prefix))
    got = host.GetRequiredPackages(language_pb2.GetRequiredPackagesRequest(
        info=info(ROOT, virtualenv=venv)))
    assert {(p.name, p.version) for p in got.packages} == {("kubernetes", "v4.25.0")}
    about = host.About(language_pb2.AboutRequest(info=info(ROOT, virtualenv=venv)))
    assert about.executable == str(Path(venv) / "bin" / "python")
    assert about.version == ".".join(map(str, sys.version_info[:3]))


def test_run_plugin_streams_output_and_exit_code(host, tmp_path):
    (tmp_path / "__main__.py").write_text(
        "import sys\nprint('port', sys.argv[1], flush=True)\n"
        "print('oops', file=sys.stderr, flush=True)\nsys.exit(3)\n")
    out, err, codes = b"", b"", []
    for r in host.RunPlugin(language_pb2.RunPluginRequest(
            pwd=str(tmp_path), args=["127.0.0.1:5"], env=["TWINSITE_X=1"],
            info=info(tmp_path, virtualenv=str(Path(sys.prefix))))):
        out, err = out + r.stdout, err + r.stderr
        if r.WhichOneof("output") == "exitcode":
            codes.append(r.exitcode)
    assert (out, err, codes) == (b"port 127.0.0.1:5\n", b"oops\n", [3])


def test_missing_virtualenv_is_refused_with_its_path(host, tmp_path):
    with pytest.raises(grpc.RpcError) as e:
        host.GetRequiredPackages(language_pb2.GetRequiredPackagesRequest(
            info=info(tmp_path, virtualenv="nope")))
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert e.value.details() == (f"virtualenv {tmp_path / 'nope'} has no bin/python: "
                                 "create it (`make setup`)")
