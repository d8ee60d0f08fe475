#!/usr/bin/env bash
# Vendors Swagger UI (swagger-ui-dist from npm, Apache-2.0) for ui/docs.html: downloads the pinned
# package with `npm pack`, copies only the files the docs page needs into ui/vendor/swagger-ui/ and
# checks each against the sha256 recorded below, so a run reproduces the committed files exactly.
# Usage: ui/vendor.sh            (re-vendor and verify)
#        ui/vendor.sh --check    (verify the files already in ui/vendor/swagger-ui/, no download)
set -euo pipefail

VERSION=5.35.0
DEST="$(cd "$(dirname "$0")" && pwd)/vendor/swagger-ui"
# file in the package -> sha256 of that file at $VERSION
declare -A SHA256=(
  [swagger-ui-bundle.js]=e6a898692f2d768e807c3ba4626068a69a2c5dd960dd6c76f3e4d3a3de180af2
  [swagger-ui.css]=5ed08757e53da3e026d6cbecc61fe5d43585c9560b302d534ad56692519a273d
  [LICENSE]=cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30
  [NOTICE]=0d20d1adef18aee3f40dd258172155521ce702ac445cb5f7b7d60ed32dad2fb2
  [swagger-ui-bundle.js.LICENSE.txt]=37eb6e7e59aed57b2c1acf076574b818ea07b74265717e0bd67b59e0baf9abbb
)

verify() {
  local dir=$1 ok=0 f sum
  for f in "${!SHA256[@]}"; do
    sum=$(sha256sum "$dir/$f" | cut -d' ' -f1)
    if [[ "$sum" != "${SHA256[$f]}" ]]; then
      echo "vendor.sh: $f: sha256 $sum, expected ${SHA256[$f]} (swagger-ui-dist@$VERSION)" >&2
      ok=1
    fi
  done
  return $ok
}

if [[ "${1:-}" == "--check" ]]; then
  verify "$DEST" && echo "ui/vendor/swagger-ui: swagger-ui-dist@$VERSION, all sha256 match"
  exit
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "swagger-ui-dist@$VERSION" >/dev/null)
tar -xzf "$tmp/swagger-ui-dist-$VERSION.tgz" -C "$tmp"
verify "$tmp/package"
mkdir -p "$DEST"
for f in "${!SHA256[@]}"; do
  install -m 0644 "$tmp/package/$f" "$DEST/$f"
done
echo "ui/vendor/swagger-ui: swagger-ui-dist@$VERSION vendored, all sha256 match"
