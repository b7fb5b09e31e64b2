"""Run the Pulumi program in-process under Pulumi's own mocks: no CLI, no cluster.

`run(topo)` returns every resource the program registered, with its inputs (what a provider and
a policy pack would see) and its provider. The mocks answer each registration with the inputs as
outputs, as a fresh `pulumi up` would for Kubernetes objects.
"""

from __future__ import annotations

import asyncio

import threading
from dataclasses import dataclass
from typing import Any, Callable

import pulumi
from pulumi.runtime import mocks, rpc, settings
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

from ..topology import Topology

PROJECT = "twinsite"
SECRET_PLACEHOLDER = "<pulumi secret>"
_lock = threading.Lock()  # the Pulumi runtime's settings are process-global


@dataclass(frozen=True)
class Captured:
    type: str
    name: str
    urn: str
    provider_urn: str  # "" for providers and components
    inputs: dict  # secrets still wrapped (see `plain` / `has_secret`)
    custom: bool

    @property
    def provider_name(self) -> str:
        return self.provider_urn.split("::")[3] if self.provider_urn else ""

    @property
    def is_kubernetes(self) -> bool:
        return self.type.startswith("kubernetes:")


def has_secret(value: Any) -> bool:
    if rpc.is_rpc_secret(value):
        return True
    if isinstance(value, dict):
        return any(has_secret(v) for v in value.values())
    if isinstance(value, list):
        return any(has_secret(v) for v in value)
    return False


def plain(value: Any, secret: Any = SECRET_PLACEHOLDER) -> Any:
    """Inputs as plain data: secrets replaced by `secret`, integral floats back to ints
    (the wire format carries every number as a double)."""
    if rpc.is_rpc_secret(value):
        inner = rpc.unwrap_rpc_secret(value)
        if isinstance(inner, dict):  # a map of secrets: keep the keys, hide the values
            return {k: secret for k in inner}
        return secret
    if isinstance(value, dict):
        return {k: plain(v, secret) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v, secret) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


class _Recorder(mocks.Mocks):
    def __init__(self, stack: str):
        self.stack = stack
        self.resources: list[Captured] = []

    def new_resource(self, args: mocks.MockResourceArgs):
        outputs = dict(args.inputs)
        if args.typ == "pulumi-python:dynamic:Resource" and "length" in args.inputs:
            # A stand-in; a real `pulumi up` generates and stores it encrypted.
            outputs["result"] = f"mock-{args.name}"
        urn = f"urn:pulumi:{self.stack}::{PROJECT}::{args.typ}::{args.name}"
        self.resources.append(Captured(args.typ, args.name, urn, args.provider or "",
                                       args.inputs, bool(args.custom)))
        return f"{args.name}-id", outputs

    def call(self, args: mocks.MockCallArgs):
        return {}, None


def _ensure_event_loop() -> None:
    """Pulumi's runtime creates futures on the thread's current loop; after another asyncio
    user (pytest-asyncio, asyncio.run) closed and unset it, give the thread a fresh one."""
    try:
        loop = asyncio.get_event_loop()
    except RuntimeError:
        loop = None
    if loop is None or loop.is_closed():
        asyncio.set_event_loop(asyncio.new_event_loop())


def run_callable(fn: Callable[[], Any], stack: str) -> tuple[list[Captured], Any]:
    """Run `fn` as a Pulumi program under mocks; the resources it registered and its result
    with every Output in it awaited (so a test sees real values, never a pending Output)."""
    with _lock:
        recorder = _Recorder(stack)
        result: list[Any] = []

        async def program() -> None:
            value = fn()
            result.append(await pulumi.Output.from_input(value).future(with_unknowns=True))

        settings.ROOT.set(None)  # a fresh root stack per run
        _ensure_event_loop()
        mocks.set_mocks(recorder, project=PROJECT, stack=stack, preview=False)
        try:
            _sync_await(run_pulumi_func(program))
        finally:
            settings.ROOT.set(None)
        return list(recorder.resources), result[0] if result else None


def run(topo: Topology) -> list[Captured]:
    """Run `program.deploy(topo)` under mocks; every resource it registered, in order."""
    from .program import deploy

    resources, _ = run_callable(lambda: (deploy(topo), None)[1], topo.stack)
    return resources
