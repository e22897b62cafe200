#!/usr/bin/env bash
# Rebuild crates/anonymize/data/{first-names,surnames}.txt, the name lists the
# `name` detector ships. Source: the 1990 US Census "frequently occurring
# names" files (a US government work, public domain) as packaged in the PyPI
# package `names` 0.3.0; common English words are marked `~` from Debian's
# `wamerican` word list (apt-get install wamerican). Needs pip and network
# access to PyPI; the tests never run it.
set -euo pipefail
cd "$(dirname "$0")/.."
export LC_ALL=C
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
pip download --no-deps --no-binary :all: -d "$work" names==0.3.0 >&2
tar xzf "$work"/names-0.3.0.tar.gz -C "$work"
src="$work/names-0.3.0/names"
grep -E '^[a-z]+$' /usr/share/dict/american-english | tr a-z A-Z | sort -u >"$work/common"
awk '{print $1}' "$src/dist.male.first" "$src/dist.female.first" | sort -u >"$work/first"
head -10000 "$src/dist.all.last" | awk '{print $1}' | sort -u >"$work/last"
out=crates/anonymize/data
{
  echo "# First names of the 1990 US Census (public domain), from PyPI package names 0.3.0;"
  echo "# '~' marks a name that is also a common English word (wamerican). scripts/namelists.sh makes this file."
  comm -23 "$work/first" "$work/common"
  comm -12 "$work/first" "$work/common" | sed 's/^/~/'
} >"$out/first-names.txt"
{
  echo "# The 10,000 most frequent surnames of the 1990 US Census (public domain), from PyPI package names 0.3.0;"
  echo "# '~' marks a surname that is also a common English word (wamerican). scripts/namelists.sh makes this file."
  comm -23 "$work/last" "$work/common"
  comm -12 "$work/last" "$work/common" | sed 's/^/~/'
} >"$out/surnames.txt"
wc -l "$out"/first-names.txt "$out"/surnames.txt
