#!/usr/bin/env bash
# Fails when a C++ file (*.cc, *.h) under ROOT is not formatted as the
# repository's .clang-format (Google style) says, listing each such file.
# Fix them with:  clang-format -i FILE...
# Build folders, .git and node_modules are not looked at.
#
# usage: launch/check_format.sh [ROOT]   (default: the repository)
set -euo pipefail

root="${1:-$(cd "$(dirname "$0")/.." && pwd)}"
if ! command -v clang-format >/dev/null 2>&1; then
  echo "check_format: clang-format is not installed (launch/install_deps.sh installs it)" >&2
  exit 2
fi

mapfile -d '' files < <(find "$root" \
  \( -name .git -o -name node_modules -o -name 'build*' -o -name '_deps' \) -prune -o \
  -type f \( -name '*.cc' -o -name '*.h' \) -print0 | sort -z)
if ((${#files[@]} == 0)); then
  echo "check_format: no C++ files under $root" >&2
  exit 2
fi

# One clang-format for all files; it names each unformatted one in a
# "FILE:LINE:COL: error: code should be clang-formatted" line.
report=$(clang-format --style=file --dry-run --Werror "${files[@]}" 2>&1) && status=0 || status=$?
mapfile -t bad < <(grep -o '^[^:]*: *[0-9]*:[0-9]*: error: code should be clang-formatted' \
  <<<"$report" | cut -d: -f1 | sort -u | sed "s|^$root/||")
if ((status != 0 && ${#bad[@]} == 0)); then
  echo "check_format: clang-format failed:" >&2
  echo "$report" | head -20 >&2
  exit 2
fi
if ((${#bad[@]} > 0)); then
  echo "check_format: ${#bad[@]} of ${#files[@]} files are not clang-formatted:" >&2
  printf '  %s\n' "${bad[@]}" >&2
  echo "fix with: clang-format -i <file>..." >&2
  exit 1
fi
echo "check_format: ${#files[@]} files formatted"
