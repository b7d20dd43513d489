#!/usr/bin/env bash
# The main job end to end on the embedded defaults: CA hierarchy, platform on loopback, project,
# CA upload, device key + CSR + certificate, mTLS connection, automatic provisioning, whoami.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/fleetpki quickstart "$@"
