#!/usr/bin/env bash
# The device check's rehearsal on this machine, as a GPU host would run it: a fresh clone of HEAD plus
# the carried .device/ and nothing else, a fresh HOME, a PATH without Node.js (as root, this machine's
# node, nodejs, npm and npx are hidden for the run: a private mount namespace binds an empty file over
# each), on Mesa's llvmpipe (Debian: libegl1 libegl-mesa0 libgles2 libgl1-mesa-dri) with a small model.
#
#   npm run device:bundle && bash tools/device/dry_run.sh [DIR] [-- device_check.sh options]
#
# DIR (default: a new temp folder) gets repo/ (the clone), home/ and out/ (device_check.log and .json).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
DIR=
if [ $# -gt 0 ] && [ "$1" != -- ]; then DIR=$1; shift; fi
[ "${1:-}" != -- ] || shift
[ -n "$DIR" ] || DIR=$(mktemp -d "${TMPDIR:-/tmp}/llava-device-dry-run.XXXXXX")
[ -f "$ROOT/.device/manifest.json" ] || { echo "dry_run: no .device/: run npm run device:bundle first" >&2; exit 1; }
if [ -n "$(git -C "$ROOT" status --porcelain -- src tools test examples package.json package-lock.json)" ]; then
  echo "dry_run: the working tree has uncommitted changes: the clone is HEAD's, the bundle may be the working tree's" >&2
fi
mkdir -p "$DIR/home" "$DIR/out"
rm -rf "$DIR/repo"
git clone --quiet --no-hardlinks "$ROOT" "$DIR/repo"
git -C "$DIR/repo" checkout --quiet --detach "$(git -C "$ROOT" rev-parse HEAD)"
cp -r "$ROOT/.device" "$DIR/repo/.device"
: >"$DIR/empty"
chmod 644 "$DIR/empty"

hide=""
if [ "$(id -u)" = 0 ] && command -v unshare >/dev/null; then
  for f in node nodejs npm npx; do
    p=$(command -v "$f" 2>/dev/null || true)
    [ -n "$p" ] && hide+="mount --bind '$DIR/empty' '$(readlink -f "$p")'; "
  done
  echo "dry_run: hiding this machine's Node.js for the run: $hide"
else
  echo "dry_run: not root (or no unshare): this machine's node stays on the PATH" >&2
fi
cd "$DIR/repo"
cmd="${hide}node --version >/dev/null 2>&1 && { echo 'dry_run: node still reachable' >&2; exit 1; }; exec bash tools/device_check.sh --dry-run --out '$DIR/out' $*"
rc=0
if [ -n "$hide" ]; then
  env -i HOME="$DIR/home" PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin TERM=dumb \
    unshare -m --propagation private bash -c "$cmd" || rc=$?
else
  env -i HOME="$DIR/home" PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin TERM=dumb \
    bash tools/device_check.sh --dry-run --out "$DIR/out" "$@" || rc=$?
fi
echo "dry_run: results in $DIR/out (exit code $rc)"
exit $rc
