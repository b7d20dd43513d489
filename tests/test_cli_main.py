"""The root command: usage errors are one line with exit code 2; help and version work."""

from __future__ import annotations

import pytest

from fleetpki_testing import RunCli


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("ca", "init", "--name", "x", "--days", "0"), "--days"),
        (("ca", "init", "--name", "x", "--key-type", "ed25519"), "--key-type"),
        (
            (
                "bulk",
                "issue",
                "--count",
                "1",
                "--ca",
                "x",
                "--project",
                "p",
                "--out",
                "o",
                "--key-type",
                "ed25519",
            ),
            "--key-type",
        ),
        (("no-such-command",), "No such command"),
        (("ca", "init"), "Missing option '--name'"),
        (("sign", "--ca", "x"), "Missing"),
    ],
)
def test_usage_error_is_one_line(run_cli: RunCli, args: tuple[str, ...], expected: str) -> None:
    rc, stdout, stderr = run_cli(*args)
    assert rc == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ") and expected in lines[0]
    assert "--help" in lines[0]
    assert "Traceback" not in stderr and stdout == ""


def test_no_arguments_shows_help(run_cli: RunCli) -> None:
    rc, stdout, stderr = run_cli()
    assert rc == 0 and "Usage: fleetpki" in stdout and "Commands" in stdout and stderr == ""


def test_version(run_cli: RunCli) -> None:
    rc, stdout, _ = run_cli("--version")
    assert rc == 0 and stdout.startswith("fleetpki ")
