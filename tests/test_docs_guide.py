"""docs/guide.md stays true: its shell blocks run, in order, as written, in an empty folder."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "guide.md"


def test_every_command_in_the_guide_works(tmp_path: Path) -> None:
    blocks = re.findall(r"```sh\n(.*?)```", GUIDE.read_text(), re.DOTALL)
    assert len(blocks) >= 6
    script = "set -euo pipefail\n" + "\n".join(blocks)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETPKI_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    proc = subprocess.run(
        ["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # what the guide says the walk-through leaves behind
    assert (tmp_path / "pki" / "cas" / "seed-root" / "ca.key.pem").exists()
    assert not (tmp_path / "ca.key.pem").exists()
    assert sorted(p.name for p in (tmp_path / "devkit-1").iterdir()) == [
        "ca-chain.pem",
        "device.crt.der",
        "device.crt.pem",
        "device.csr.pem",
        "device.key.der",
        "device.key.pem",
    ]
    assert "OK: CN=Acme Root CA <- CN=factory-1 <- CN=dev-0001,O=acme" in proc.stdout
