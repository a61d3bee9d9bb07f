#!/usr/bin/env bash
# Puts the offline corpora this machine has into grove's data directory, where a download would
# have put them: Tiny Shakespeare from ../shared/data (beside the project), when present.
set -euo pipefail
cd "$(dirname "$0")/.."
data_dir="${GROVE_DATA_DIR:-$HOME/.cache/grove/data}"
source_file=../shared/data/tinyshakespeare/input.txt
target="$data_dir/tiny_shakespeare/input.txt"
if [ -f "$source_file" ] && [ ! -f "$target" ]; then
  mkdir -p "$(dirname "$target")"
  cp "$source_file" "$target.tmp" && mv "$target.tmp" "$target"
  echo "placed Tiny Shakespeare at $target"
fi
