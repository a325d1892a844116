#!/usr/bin/env bash
# Each optional extra of pyproject.toml, installed alone in a fresh venv, running what it
# is for: an extra that lacks a package its users need fails here, not on a user's machine.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

source .ci/fresh_venv.sh
fresh() {  # fresh EXTRA: a new venv with only the package and that extra
  echo "extras: .[$1] in a fresh venv"
  fresh_venv "$tmp/$1" -e ".[$1]"
}

# sqlalchemy: an app on a SQLAlchemyJobStore starts, fires a stored job, lists it.
fresh sqlalchemy
"$tmp/sqlalchemy/bin/python" .ci/smoke_sqlalchemy.py

# postgresql, redis: two apps of one deployment coordinate through the server (one leads
# and runs the job, the other stands by); PostgreSQL also keeps the run history.
for extra in postgresql redis; do
  fresh "$extra"
  "$tmp/$extra/bin/python" .ci/smoke_coordination.py "$extra"
done

# uvloop: `hypercorn -k uvloop`, as the deployment guide recommends, serves the example.
fresh uvloop
"$tmp/uvloop/bin/python" .ci/smoke_uvloop.py

# bench: every scenario, small (about a minute on an idle machine), and no row left out
# for want of a package (a missing peer shows as "n/a: ... is not installed", not a failure).
fresh bench
"$tmp/bench/bin/python" -m bench --quick --json "$tmp/bench.json" >/dev/null
"$tmp/bench/bin/python" - "$tmp/bench.json" <<'PY'
import json, sys
scenarios = json.load(open(sys.argv[1]))["scenarios"]
missing = [
    f"{name}: {row['impl']}: {row['unavailable']}"
    for name, scenario in scenarios.items()
    for row in scenario["rows"]
    if "install" in (row["unavailable"] or "")
]
assert not missing, "the bench extra lacks what these rows need:\n" + "\n".join(missing)
PY

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
echo "extras: sqlalchemy, postgresql, redis, uvloop, bench and docs work from a fresh install"
