#!/usr/bin/env bash
# The test suite against the LOWEST version of every runtime dependency pyproject.toml allows
# (.ci/lowest.txt), so a lower bound that no longer works fails CI instead of a user's install.
# The test-only dependencies resolve as usual. The benchmark test is left out: it measures
# speed, which the normal run already covers.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

source .ci/fresh_venv.sh
fresh_venv "$tmp/venv" -c .ci/lowest.txt -e '.[test]'
"$tmp/venv/bin/python" - <<'PY'
from importlib.metadata import version
for name in ("quart", "apscheduler", "hypercorn", "aiosqlite", "blinker"):
    print(f"lowest: {name} {version(name)}")
PY
# The chaos tests (minutes of processes stopped and killed) are left out too: they prove
# coordination, which no lower bound changes, and the normal run has them.
"$tmp/venv/bin/pytest" -q -p no:cacheprovider --ignore=tests/test_bench.py \
  --ignore=tests/test_chaos.py
