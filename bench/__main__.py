"""``python -m bench``: run the benchmarks and print one table per scenario.

python -m bench                      # every scenario, full size (about 30 minutes)
python -m bench --quick              # every scenario, small (under a minute)
python -m bench --scenario burst --rounds 3 --json results.json
python -m bench --profile burst-plain   # a cProfile of one measurement (see --help)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import api, burst, failover, loop_health, persistence, scale, steady, store_outage
from bench._util import ROOT, Scenario, machine, machine_text, snapshot_source

SCENARIOS = {
    "burst": burst.run,
    "steady": steady.run,
    "loop_health": loop_health.run,
    "api": api.run,
    "persistence": persistence.run,
    "store_outage": store_outage.run,
    "scale": scale.run,
    "failover": failover.run,
}


def _git_state() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "quart_sched"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return f"{head}{' + uncommitted changes in quart_sched/' if dirty else ''}" or "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: under a minute")
    parser.add_argument(
        "--scenario", action="append", choices=sorted(SCENARIOS), help="run only this (repeatable)"
    )
    parser.add_argument("--rounds", type=int, help="rounds per measurement (median reported)")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument(
        "--profile",
        choices=sorted(_profiles()),
        help="instead of benchmarking, print a cProfile of one measurement",
    )
    args = parser.parse_args(argv)
    if args.rounds is not None and args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.profile:
        _profiles()[args.profile]()
        return 0

    digest = snapshot_source()
    info = machine()
    info["quart_sched_source"] = f"{_git_state()}; measured copy sha256 {digest}"
    info["load_average_before"] = os.getloadavg()
    print(machine_text(info))
    print(f"quart_sched source: {info['quart_sched_source']}")
    print(f"Load average before: {', '.join(f'{x:.2f}' for x in info['load_average_before'])}")
    print()

    results: dict[str, Any] = {
        "machine": info,
        "options": {"quick": args.quick, "rounds": args.rounds, "scenarios": args.scenario},
        "scenarios": {},
    }
    begin = time.perf_counter()
    for name in args.scenario or list(SCENARIOS):
        started, load = time.perf_counter(), os.getloadavg()[0]
        scenario: Scenario = SCENARIOS[name](args.quick, args.rounds)
        scenario.elapsed_s = time.perf_counter() - started
        scenario.load = (load, os.getloadavg()[0])
        print(scenario.report(), end="\n\n", flush=True)
        results["scenarios"][name] = scenario.to_json()
        if args.json:  # after each scenario, so a long run leaves partial results
            args.json.write_text(json.dumps(results, indent=2) + "\n")
    info["load_average_after"] = os.getloadavg()
    results["elapsed_s"] = round(time.perf_counter() - begin, 1)
    print(
        f"Done in {results['elapsed_s']:.0f} s; load average after: "
        f"{', '.join(f'{x:.2f}' for x in info['load_average_after'])}"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


def _profiles() -> dict[str, Any]:
    from bench import profile

    return profile.PROFILES


if __name__ == "__main__":
    sys.exit(main())
