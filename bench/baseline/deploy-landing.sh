#!/usr/bin/env bash
# The old LXC 139 deploy, as the seed README describes it: fetch + hard reset, diff, copy the landing page.
# Run by Debian's `webhook` 2.8.0 (bench/systems.ts writes its hooks.json). Arguments: clone dir, target
# file, and the repository file to deploy (default landing/index.html).
set -euo pipefail
clone="$1"
target="$2"
source="${3:-landing/index.html}"
cd "$clone"
before=$(git rev-parse HEAD)
git fetch --quiet origin main
git reset --quiet --hard origin/main
after=$(git rev-parse HEAD)
if git diff --name-only "$before" "$after" | grep -qxF "$source" || [ ! -f "$target" ]; then
  cp "$source" "$target"
  echo "$(date -Is) deployed $source at $after"
fi
