"""Shared plumbing: statistics, child processes, machine facts and the result model."""

from __future__ import annotations

import atexit
import hashlib
import json
import math
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULT_MARK = "BENCH-RESULT "
#: Where this run's copy of quart_sched/ is (see snapshot_source).
SOURCE_ENV = "BENCH_QUART_SCHED_SOURCE"

#: Display names, used as row labels and in the JSON output.
RAW = "raw APScheduler"
QS = "quart_sched"
QS_HISTORY = "quart_sched, history on"
QS_CORE = "QuartScheduler alone, no app context"
FAS = "Flask-APScheduler"
QT = "quart-tasks"
NONE = "no scheduler"


class NotAvailable(Exception):
    """A variant that cannot be measured here; its row prints "n/a" with this reason."""


# ------------------------------------------------------------------------- statistics


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def median(values: Iterable[float]) -> float:
    finite = [v for v in values if v is not None and not math.isnan(v)]
    return percentile(finite, 50) if finite else math.nan


# --------------------------------------------------------------------- result model


@dataclass
class Row:
    """One implementation (or variant) in a scenario's table: its rounds and medians."""

    impl: str
    group: str = ""
    rounds: list[dict[str, float]] = field(default_factory=list)
    unavailable: str | None = None
    note: str = ""

    def median(self, key: str) -> float:
        return median(r[key] for r in self.rounds if r.get(key) is not None)

    def medians(self) -> dict[str, float]:
        keys: list[str] = []
        for r in self.rounds:
            keys += [k for k in r if k not in keys]
        return {k: self.median(k) for k in keys}


@dataclass
class Column:
    key: str
    header: str
    fmt: str = "{:,.1f}"


@dataclass
class Ratio:
    """A column comparing each row with a reference row of the same group (or, if that
    group has none, of any group): ``ref / row``, or ``row / ref`` if ``row_over_ref``."""

    header: str
    key: str
    ref: str
    row_over_ref: bool = False


@dataclass
class Target:
    name: str
    measured: float
    limit: float
    higher_is_better: bool
    unit: str = "x"
    #: The same ratio in each round (the rounds are interleaved: round i of both rows ran
    #: side by side), so the spread shows whether the verdict could flip.
    per_round: list[float] = field(default_factory=list)

    @property
    def met(self) -> bool:
        if math.isnan(self.measured):
            return False
        if self.higher_is_better:
            return self.measured >= self.limit
        return self.measured < self.limit

    def line(self) -> str:
        op = "≥" if self.higher_is_better else "<"
        verdict = "met" if self.met else "MISSED"
        spread = ""
        rounds = [r for r in self.per_round if not math.isnan(r)]
        if len(rounds) > 1:
            agree = sum(
                (r >= self.limit) if self.higher_is_better else (r < self.limit) for r in rounds
            )
            spread = (
                f" (rounds {min(rounds):.3g} to {max(rounds):.3g}{self.unit}; "
                f"met in {agree} of {len(rounds)})"
            )
        return (
            f"- target {self.name}: {op} {self.limit:g}{self.unit}; measured "
            f"{self.measured:.3g}{self.unit}{spread}: **{verdict}**"
        )


@dataclass
class Scenario:
    """A scenario's outcome: one table (rows x columns), ratios, targets and notes."""

    name: str
    title: str
    params: dict[str, Any]
    columns: list[Column]
    rows: list[Row] = field(default_factory=list)
    ratios: list[Ratio] = field(default_factory=list)
    #: The header of the first column, naming what the rows' groups are.
    group_header: str = "jobs"
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0
    #: The 1-minute load average when the scenario started and ended (other processes
    #: on the machine skew the figures: see the docs).
    load: tuple[float, float] = (math.nan, math.nan)
    #: More tables of this scenario, each with its own columns, rows, notes and targets,
    #: printed after this one (their params, elapsed time and load are this one's).
    tables: list[Scenario] = field(default_factory=list)

    def row(self, impl: str, group: str = "") -> Row:
        for row in self.rows:
            if row.impl == impl and row.group == group:
                return row
        row = Row(impl, group)
        self.rows.append(row)
        return row

    def value(self, impl: str, group: str | None, key: str) -> float:
        """The median of ``key`` for ``impl`` in ``group`` (None: the first group with it)."""
        for row in self.rows:
            if row.impl == impl and group in (None, row.group) and row.unavailable is None:
                return row.median(key)
        return math.nan

    def round_ratios(self, impl: str, ref: str, group: str | None, key: str) -> list[float]:
        """``impl`` ÷ ``ref`` for ``key``, round by round (interleaved rounds pair up)."""
        rows = {}
        for row in self.rows:
            if row.impl in (impl, ref) and group in (None, row.group) and row.unavailable is None:
                rows.setdefault(row.impl, row)
        if len(rows) < 2:
            return []
        out = []
        for a, b in zip(rows[impl].rounds, rows[ref].rounds, strict=False):
            x, y = a.get(key), b.get(key)
            out.append(x / y if x is not None and y else math.nan)
        return out

    def ratio_target(
        self, name: str, impl: str, ref: str, group: str | None, key: str, limit: float
    ) -> Target:
        """A target on the ratio of two rows' medians (higher is better), with its spread."""
        try:
            measured = self.value(impl, group, key) / self.value(ref, group, key)
        except ZeroDivisionError:
            measured = math.nan
        target = Target(name, measured, limit, True)
        target.per_round = self.round_ratios(impl, ref, group, key)
        self.targets.append(target)
        return target

    def ratio_of(self, ratio: Ratio, row: Row) -> float:
        if row.unavailable is not None:
            return math.nan
        in_group = any(r.impl == ratio.ref and r.group == row.group for r in self.rows)
        ref = self.value(ratio.ref, row.group if in_group else None, ratio.key)
        value = row.median(ratio.key)
        try:
            return value / ref if ratio.row_over_ref else ref / value
        except ZeroDivisionError:
            return math.nan

    # output -------------------------------------------------------------------------

    def markdown(self) -> str:
        has_group = any(row.group for row in self.rows)
        headers = ([self.group_header] if has_group else []) + ["implementation"]
        headers += [c.header for c in self.columns]
        headers += [r.header for r in self.ratios]
        lines = [
            "| " + " | ".join(headers) + " |",
            "|"
            + "|".join("---" if i < 1 + has_group else "---:" for i in range(len(headers)))
            + "|",
        ]
        for row in self.rows:
            cells = [row.group] if has_group else []
            cells.append(row.impl)
            if row.unavailable is not None:
                cells += ["n/a"] * (len(self.columns) + len(self.ratios))
            else:
                cells += [_fmt(c.fmt, row.median(c.key)) for c in self.columns]
                cells += [_ratio(self.ratio_of(r, row)) for r in self.ratios]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def report(self) -> str:
        params = ", ".join(f"{k}={v}" for k, v in self.params.items())
        load = f"load average {self.load[0]:.2f} → {self.load[1]:.2f}"
        out = [
            f"### {self.title}",
            "",
            f"_{params}; {self.elapsed_s:.0f} s; {load}_",
            "",
            self.markdown(),
        ]
        out += self._notes_and_targets()
        for table in self.tables:
            out += ["", f"#### {table.title}", "", table.markdown()]
            out += table._notes_and_targets()
        return "\n".join(out)

    def _notes_and_targets(self) -> list[str]:
        out: list[str] = []
        unavailable = [r for r in self.rows if r.unavailable]
        if unavailable or self.notes:
            out.append("")
        for row in unavailable:
            out.append(
                f"- n/a ({row.group + ', ' if row.group else ''}{row.impl}): {row.unavailable}"
            )
        out += [f"- {note}" for note in self.notes]
        if self.targets:
            out.append("")
            out += [t.line() for t in self.targets]
        return out

    def to_json(self) -> dict[str, Any]:
        rows = []
        for row in self.rows:
            rows.append(
                {
                    "impl": row.impl,
                    "group": row.group,
                    "available": row.unavailable is None,
                    "unavailable": row.unavailable,
                    "median": _clean(row.medians()) if row.unavailable is None else {},
                    "ratios": _clean({r.header: self.ratio_of(r, row) for r in self.ratios}),
                    "rounds": [_clean(r) for r in row.rounds],
                }
            )
        return {
            "title": self.title,
            "params": self.params,
            "elapsed_s": round(self.elapsed_s, 2),
            "load_average": list(self.load),
            "ratios": [
                {
                    "header": r.header,
                    "metric": r.key,
                    "reference": r.ref,
                    "row_over_ref": r.row_over_ref,
                }
                for r in self.ratios
            ],
            "rows": rows,
            "targets": [
                {
                    "name": t.name,
                    "measured": _clean({"v": t.measured})["v"],
                    "limit": t.limit,
                    "higher_is_better": t.higher_is_better,
                    "met": t.met,
                }
                for t in self.targets
            ],
            "notes": self.notes,
            "tables": [table.to_json() for table in self.tables],
        }


def _ratio(value: float) -> str:
    return _fmt("{:.3f}x" if abs(value) < 0.1 else "{:.2f}x", value)


def _fmt(fmt: str, value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return fmt.format(value)


def _clean(values: dict[str, Any]) -> dict[str, Any]:
    """JSON has no NaN: missing figures become null."""
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in values.items()}


# ------------------------------------------------------------------- child processes


def run_child(module: str, func: str, params: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run ``bench.<module>.<func>(params)`` in a fresh interpreter and return its result.

    A fresh process per measurement keeps one implementation's threads, garbage and
    imports out of another's figures.
    """
    cmd = [sys.executable, "-m", "bench._child", module, func, json.dumps(params)]
    proc = subprocess.run(
        cmd, cwd=child_cwd(), capture_output=True, text=True, timeout=timeout, env=child_env()
    )
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_MARK):
            result: dict[str, Any] = json.loads(line[len(RESULT_MARK) :])
            if "unavailable" in result:
                raise NotAvailable(result["unavailable"])
            return result
    raise RuntimeError(
        f"bench child {module}.{func}({params}) failed with exit code {proc.returncode}:\n"
        f"{proc.stderr[-3000:]}"
    )


def snapshot_source() -> str:
    """Copy ``quart_sched/`` aside and measure that copy in every process of this run.

    The working tree may change while a long run goes on (an editor saves, a branch is
    switched); each child imports quart_sched afresh, so without a snapshot one run could
    measure several versions. Returns a digest of the measured source.
    """
    tmp = tempfile.mkdtemp(prefix="bench-src-")
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    target = Path(tmp) / "quart_sched"
    shutil.copytree(
        ROOT / "quart_sched", target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    digest = hashlib.sha256()
    for path in sorted(target.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(target)).encode() + b"\0" + path.read_bytes())
    os.environ[SOURCE_ENV] = tmp
    sys.path.insert(0, tmp)
    check = subprocess.run(
        [sys.executable, "-c", "import quart_sched; print(quart_sched.__file__)"],
        capture_output=True,
        text=True,
        env=child_env(),
        cwd=child_cwd(),
    )
    if not check.stdout.startswith(tmp):
        raise RuntimeError(f"children would not import the snapshot: {check.stdout}{check.stderr}")
    return digest.hexdigest()[:12]


def child_cwd() -> str:
    """A child's working directory: ``python -m`` puts it first on sys.path, so it must be
    the snapshot (when there is one), not the repository with the live quart_sched/."""
    return os.environ.get(SOURCE_ENV) or str(ROOT)


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    paths = [env.get(SOURCE_ENV), str(ROOT), env.get("PYTHONPATH")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    env.pop("PYTHONASYNCIODEBUG", None)  # debug mode would measure the debugger
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def rss_bytes() -> int:
    """This process's resident set size, from /proc (Linux)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def interleaved(rounds: int, variants: Sequence[Any], measure: Callable[[int, Any], None]) -> None:
    """Round-robin: round 1 of every variant, then round 2, ... so drift hits all alike;
    each round starts one variant later, so no variant is always first."""
    for index in range(rounds):
        shift = index % len(variants) if variants else 0
        for variant in [*variants[shift:], *variants[:shift]]:
            measure(index, variant)


# ------------------------------------------------------------------------ machine


def machine() -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions = {}
    for dist in (
        "quart-sched",
        "APScheduler",
        "Quart",
        "Hypercorn",
        "Flask",
        "Flask-APScheduler",
        "quart-tasks",
        "gunicorn",
        "waitress",
        "SQLAlchemy",
    ):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    mem = None
    try:
        with open("/proc/meminfo") as info:
            mem = round(int(info.readline().split()[1]) / 1024**2, 1)
    except (OSError, ValueError, IndexError):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": mem,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "versions": versions,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }


def machine_text(info: dict[str, Any]) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items() if v)
    return (
        f"Machine: {info['cpu']}, {info['cores']} cores, {info['memory_gib']} GiB; "
        f"{info['implementation']} {info['python']} on {info['platform']}\n"
        f"Packages: {versions}\nDate: {info['date']}"
    )


# -------------------------------------------------------------- quart_sched variants


def history_supported() -> bool:
    """Whether this quart_sched has run history (roadmap item 1): its config key exists."""
    from quart_sched import _config

    return "SCHEDULER_HISTORY" in _config.KEYS


def fresh_instance_path() -> str:
    """A new, empty instance folder for one measurement's Quart app, removed at exit.

    quart_sched keeps its coordination ledger in the instance folder by default: with the
    bench's own folder, the ledger would grow with every run (the bench's jobs keep their
    fires for 7 days), and each run would measure a different file. Every run starts as
    on a fresh install instead.
    """
    path = tempfile.mkdtemp(prefix="bench-instance-")
    atexit.register(shutil.rmtree, path, True)
    return path


def quart_sched_config(history: str | None = None) -> dict[str, Any]:
    """App config for a quart_sched row: history off unless ``history`` (a SQLite path).

    The hook for the "history on" rows: they pass a path and print n/a (NotAvailable)
    while quart_sched has no history. Rows without history pin it off, so they measure
    the scheduler itself whatever the default is.
    """
    if not history_supported():
        if history is not None:
            raise NotAvailable("run history is not in quart_sched yet (roadmap item 1)")
        return {}
    return {"SCHEDULER_HISTORY": history if history is not None else False}
