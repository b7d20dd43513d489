#!/usr/bin/env bash
# The main job end to end on the embedded defaults: CA hierarchy, platform on loopback, project,
# CA upload, device key + CSR + certificate, mTLS connection, automatic provisioning, whoami.
# Each run gets its own folder under quickstart-out/ (or pass --dir DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
if [ $# -eq 0 ]; then
  mkdir -p quickstart-out
  set -- --dir "quickstart-out/$(date -u +%Y%m%dT%H%M%SZ)"
fi
exec .venv/bin/fleetpki quickstart "$@"
