#!/usr/bin/env bash
# Nightly build of the Cinny dev branch on LXC 106 (cron: /etc/cron.d/cinny-dev-update, 03:00).
# Builds in /opt/cinny-dev, checks dist/index.html, then swaps the web root and restores config.json
# from the backup that survives rebuilds. A failed build leaves the live site untouched.
set -euo pipefail

SRC=/opt/cinny-dev
WEBROOT=/var/www/html
CONFIG_BACKUP="$SRC/.cinny-config.json"
LOG_TAG=cinny-dev-update

log() { logger -t "$LOG_TAG" -- "$*"; echo "$*"; }

cd "$SRC"
git fetch --quiet origin dev
if [ "$(git rev-parse HEAD)" = "$(git rev-parse origin/dev)" ] && [ "${1:-}" != "--force" ]; then
  log "dev unchanged at $(git rev-parse --short HEAD); nothing to build"
  exit 0
fi
git reset --quiet --hard origin/dev

export NODE_OPTIONS=--max_old_space_size=896
npm ci --no-audit --no-fund
npm run build

if [ ! -f dist/index.html ]; then
  log "build produced no dist/index.html; live site left as it was"
  exit 1
fi

# Build the new web root beside the old one, then swap with renames: never a half-copied site.
NEW="$WEBROOT.new.$$"
OLD="$WEBROOT.old.$$"
rm -rf "$NEW"
cp -a dist "$NEW"
if [ -f "$CONFIG_BACKUP" ]; then
  cp "$CONFIG_BACKUP" "$NEW/config.json"
fi
mv "$WEBROOT" "$OLD"
mv "$NEW" "$WEBROOT"
rm -rf "$OLD"
log "deployed cinny dev $(git rev-parse --short HEAD)"
