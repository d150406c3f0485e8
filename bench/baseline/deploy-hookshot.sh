#!/usr/bin/env bash
# The old LXC 151 deploy: fetch + hard reset, and when a transform changed, the old hookshot/deploy.sh
# (bench/baseline/hookshot-deploy.sh: one whole-content PUT per transform). Arguments: clone dir.
# Env: MATRIX_TOKEN, MATRIX_SERVER, MATRIX_ROOM.
set -euo pipefail
clone="$1"
cd "$clone"
before=$(git rev-parse HEAD)
git fetch --quiet origin main
git reset --quiet --hard origin/main
after=$(git rev-parse HEAD)
if git diff --name-only "$before" "$after" | grep -q '^hookshot/'; then
  "$(dirname "$0")/hookshot-deploy.sh" "$clone/hookshot"
fi
