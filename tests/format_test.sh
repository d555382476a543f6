#!/usr/bin/env bash
# Every C++ file in the repository is formatted as .clang-format says
# (launch/check_format.sh). First shows the check can fail: a folder with one
# formatted and one unformatted file must be reported, naming only the latter.
#
# usage: format_test.sh SOURCE_DIR
set -euo pipefail

src=$(cd "$1" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

cp "$src/.clang-format" "$tmp/"
printf 'int formatted() { return 1; }\n' >"$tmp/formatted.cc"
printf 'int  unformatted( ){return 1;}\n' >"$tmp/unformatted.cc"
if bash "$src/launch/check_format.sh" "$tmp" 2>"$tmp/report"; then
  echo "format_test: the check passed a folder holding an unformatted file" >&2
  exit 1
fi
if ! grep -qx '  unformatted.cc' "$tmp/report" || grep -q 'formatted.cc$' <(grep -v unformatted "$tmp/report"); then
  echo "format_test: the check's report names the wrong files:" >&2
  cat "$tmp/report" >&2
  exit 1
fi

bash "$src/launch/check_format.sh" "$src"
