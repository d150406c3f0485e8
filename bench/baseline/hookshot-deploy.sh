#!/usr/bin/env bash
# The old hookshot/deploy.sh, as the seed README describes it: push every transform function to Matrix
# room state (one PUT per file, whole content), whenever any hookshot/*.js changed.
# Env: MATRIX_TOKEN, MATRIX_SERVER, MATRIX_ROOM. Argument: the hookshot directory.
set -euo pipefail
dir="$1"
for f in "$dir"/*.js; do
  name=$(basename "$f" .js)
  body=$(jq -n --arg name "$name" --rawfile fn "$f" '{name: $name, transformationFunction: $fn}')
  curl -fsS -X PUT -H "Authorization: Bearer $MATRIX_TOKEN" -H 'Content-Type: application/json' \
    --data "$body" "$MATRIX_SERVER/_matrix/client/v3/rooms/$(jq -rn --arg r "$MATRIX_ROOM" '$r|@uri')/state/uk.half-shot.matrix-hookshot.generic.hook/$name" >/dev/null
done
