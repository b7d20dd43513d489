"""The passphrase prompt on a real terminal (a pty): asked twice for a new key, never echoed."""

from __future__ import annotations

import os
import select
import signal
import time
from pathlib import Path

from fleetpki.home import Home
from fleetpki_testing import FLEETPKI


def _run_on_pty(args: list[str], home: Path, answers: list[str]) -> tuple[int, str]:
    """Run fleetpki with a pty as its controlling terminal, typing ``answers`` at each prompt."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "FLEETPKI_HOME": str(home)}
    pid, fd = os.forkpty()
    if pid == 0:  # child
        os.execve(FLEETPKI, [FLEETPKI, *args], env)
    output = b""
    pending = list(answers)
    answered = 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            output += chunk
            # Answer a prompt printed since the last answer (the newline the child prints after
            # reading one must not count as a new prompt).
            if pending and output[answered:].rstrip().endswith(b":"):
                os.write(fd, pending.pop(0).encode() + b"\n")
                answered = len(output)
    else:  # deadline: still waiting for input; never hang the suite on a missed prompt
        os.kill(pid, signal.SIGKILL)
        output += b"\n[killed: no answer within the deadline]"
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), output.decode(errors="replace")


def test_prompt_twice_for_a_new_ca_key(tmp_path: Path) -> None:
    home = tmp_path / "home"
    rc, out = _run_on_pty(["ca", "init", "--name", "root"], home, ["typed secret", "typed secret"])
    assert rc == 0, out
    assert "Passphrase for the new CA 'root' key:" in out
    assert "Repeat the passphrase:" in out
    assert "typed secret" not in out  # not echoed
    Home(home).load_ca("root", b"typed secret")


def test_prompt_mismatch_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    rc, out = _run_on_pty(["ca", "init", "--name", "root"], home, ["one", "two"])
    assert rc == 1, out
    assert "error: the passphrases do not match" in out
    assert not (home / "cas" / "root").exists()
