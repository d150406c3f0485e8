#!/usr/bin/env bash
# The old LXC 139 deploy, as the seed README describes it: fetch + hard reset, diff, copy the landing page.
# Run by Debian's `webhook` 2.8.0 (baseline/hooks.json). Arguments: clone dir, target file.
set -euo pipefail
clone="$1"
target="$2"
cd "$clone"
before=$(git rev-parse HEAD)
git fetch --quiet origin main
git reset --quiet --hard origin/main
after=$(git rev-parse HEAD)
if git diff --name-only "$before" "$after" | grep -qx 'landing/index.html' || [ ! -f "$target" ]; then
  cp landing/index.html "$target"
  echo "$(date -Is) deployed landing page at $after"
fi
