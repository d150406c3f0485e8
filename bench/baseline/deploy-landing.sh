#!/usr/bin/env bash
# The old per-host copy deploy (LXC 139, and LXC 106 and 110 alike), as the seed README describes it: fetch
# + hard reset, diff, copy the file, then the host's follow-up (LXC 139: `nginx -s reload`; LXC 110: restart
# draupnir). Run by Debian's `webhook` 2.8.0 (bench/systems.ts writes its hooks.json). Arguments: clone
# dir, target file, the repository file to deploy (default landing/index.html), and the command run after
# a copy (word-split; none if empty).
set -euo pipefail
clone="$1"
target="$2"
source="${3:-landing/index.html}"
after_copy="${4:-}"
cd "$clone"
before=$(git rev-parse HEAD)
git fetch --quiet origin main
git reset --quiet --hard origin/main
after=$(git rev-parse HEAD)
if git diff --name-only "$before" "$after" | grep -qxF "$source" || [ ! -f "$target" ]; then
  cp "$source" "$target"
  if [ -n "$after_copy" ]; then $after_copy; fi
  echo "$(date -Is) deployed $source at $after"
fi
