"""`twinsite lab` accepts --state-dir before or after its subcommand, as the docs write it."""

import pytest

from twinsite import faults
from twinsite.lab import cli


@pytest.mark.parametrize("argv", [
    ["--state-dir", "/tmp/x", "up", "--stack", "lab"],
    ["up", "--stack", "lab", "--state-dir", "/tmp/x"],
])
def test_state_dir_before_or_after_the_subcommand(argv):
    args = cli._parser().parse_args(argv)
    assert args.cmd == "up" and args.stack == "lab" and args.state_dir == "/tmp/x"


def test_state_dir_after_a_fault_subcommand():
    args = cli._parser().parse_args(["fault", "kill-zone", "ansan-a", "--state-dir", "/tmp/y"])
    assert (args.fault, args.zone, args.mode, args.state_dir) == ("kill-zone", "ansan-a", "power",
                                                                  "/tmp/y")


def test_state_dir_defaults_to_none():
    assert cli._parser().parse_args(["status"]).state_dir is None


@pytest.mark.parametrize("argv, fault", [
    (["fault", "kill-zone", "ansan-a"], faults.ZoneOutage("ansan-a")),
    (["fault", "kill-zone", "ansan-a", "--mode", "crash"], faults.ZoneOutage("ansan-a", "crash")),
    (["fault", "cut-power", "all"], faults.SitePowerLoss("all")),
    (["fault", "throttle", "pangyo", "ansan", "80", "--jitter-ms", "5", "--bandwidth-kbit", "800"],
     faults.LinkShape("pangyo", "ansan", 80.0, 5.0, 800)),
    (["fault", "partition", "pangyo", "witness"], faults.LinkPartition("pangyo", "witness")),
    (["fault", "restore"], faults.Restore("all")),
    (["fault", "restore", "pangyo", "--timeout-s", "30"], faults.Restore("pangyo", 30.0)),
    (["fault", "heal"], faults.Heal()),
    (["fault", "heal", "pangyo", "ansan"], faults.Heal("pangyo", "ansan")),
])
def test_fault_subcommands_build_the_fault_values(argv, fault):
    """The lab CLI is generated from twinsite.faults: one subcommand per fault class."""
    args = cli._parser().parse_args(argv)
    built = args.fault_cls(**{n: getattr(args, n) for n, _, _ in faults.fields_of(args.fault_cls)})
    assert built == fault


def test_a_bad_fault_argument_is_one_line_before_any_lab_is_asked(tmp_path, capsys):
    assert cli.main(["--state-dir", str(tmp_path), "fault", "throttle", "a", "b", "-1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "twinsite lab: latency_ms must be a number >= 0, got -1.0"


def test_a_failed_start_quotes_the_supervisors_verdict_not_the_noise_after_it(tmp_path):
    """A start that fails prints "lab: start failed: ..."; a client library may log tracebacks
    while the supervisor shuts down: the one-line error must still name the cause."""
    from twinsite.lab import state
    log = tmp_path / "supervisor.log"
    log.write_text("boot noise\nlab: start failed: timed out after 30.0s waiting for every "
                   "gateway's /readyz\nTraceback (most recent call last):\n"
                   "ConnectionRefusedError: [Errno 111] Connection refused\n")
    assert "waiting for every gateway's /readyz" in state.log_tail(log, prefer="lab: ")
    assert state.log_tail(log).startswith("ConnectionRefusedError")  # no preference: last line
    assert state.log_tail(tmp_path / "nope", "no supervisor log", prefer="lab: ") == \
        "no supervisor log"
