#!/usr/bin/env bash
# Each optional extra of pyproject.toml, installed alone in a fresh venv, running what it
# is for: an extra that lacks a package its users need fails here, not on a user's machine.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

fresh() {  # fresh EXTRA: a new venv with only the package and that extra
  echo "extras: .[$1] in a fresh venv"
  python3 -m venv "$tmp/$1"
  "$tmp/$1/bin/pip" install -q -e ".[$1]"
}

# sqlalchemy: an app on a SQLAlchemyJobStore starts, fires a stored job, lists it.
fresh sqlalchemy
"$tmp/sqlalchemy/bin/python" .ci/smoke_sqlalchemy.py

# bench: every scenario, small (about a minute).
fresh bench
"$tmp/bench/bin/python" -m bench --quick --json "$tmp/bench.json" >/dev/null

# docs: the site builds with warnings as errors and without the network (unshare gives
# the build no network where this runs as root; elsewhere it builds as it is).
fresh docs
build=("$tmp/docs/bin/mkdocs" build --strict --quiet --site-dir "$tmp/site")
if unshare -n true 2>/dev/null; then
  NO_MKDOCS_2_WARNING=1 unshare -n "${build[@]}"
else
  NO_MKDOCS_2_WARNING=1 "${build[@]}"
fi
test -f "$tmp/site/index.html"
echo "extras: sqlalchemy, bench and docs work from a fresh install"
