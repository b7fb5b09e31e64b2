"""`twinsite lab` accepts --state-dir before or after its subcommand, as the docs write it."""

import pytest

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
