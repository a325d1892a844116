"""pyproject.toml says what a fresh install needs, and the files CI relies on agree with it.

The real checks are installs: .ci/extras.sh installs each extra alone in a fresh venv and
runs what it is for, and .ci/lowest.sh runs the suite on the lowest allowed versions.
These tests catch the same mistakes early, without a network.
"""

from __future__ import annotations

import ast
import sys
from importlib.metadata import PackageNotFoundError, packages_distributions, requires
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 has no tomllib
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
PROJECT = PYPROJECT["project"]


def _name(requirement: str) -> str:
    return canonicalize_name(Requirement(requirement).name)


def _lower_bound(requirement: str) -> Version | None:
    found = [spec.version for spec in Requirement(requirement).specifier if spec.operator == ">="]
    return Version(found[0]) if found else None


def test_lowest_constraints_pin_every_runtime_lower_bound() -> None:
    """.ci/lowest.sh tests exactly the lowest versions pyproject.toml allows."""
    pins = {}
    for line in (ROOT / ".ci" / "lowest.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[_name(name)] = Version(version.strip())
    bounds = {_name(req): _lower_bound(req) for req in PROJECT["dependencies"]}
    assert all(bounds.values()), f"a runtime dependency has no lower bound: {bounds}"
    assert pins == bounds, (
        "pin in .ci/lowest.txt the lowest version pyproject.toml allows for each runtime "
        f"dependency: pyproject says {bounds}, lowest.txt {pins}"
    )


def test_build_backend_is_new_enough_for_the_metadata() -> None:
    # An SPDX string as `license` is understood from setuptools 77 on; older ones refuse it.
    requires = PYPROJECT["build-system"]["requires"]
    setuptools = next(req for req in requires if _name(req) == "setuptools")
    if isinstance(PROJECT.get("license"), str):
        bound = _lower_bound(setuptools)
        assert bound is not None and bound >= Version("77"), setuptools


def test_license_file_is_the_apache_license() -> None:
    assert PROJECT["license"] == "Apache-2.0"
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text


def _imported_distributions(folder: Path) -> set[str]:
    """The distributions whose top-level modules the files in ``folder`` import."""
    modules: set[str] = set()
    for path in folder.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    owners = packages_distributions()
    dists: set[str] = set()
    for module in modules - set(sys.stdlib_module_names) - {"bench", "quart_sched"}:
        assert module in owners, f"{folder.name} imports {module!r}, which nothing installs"
        dists.update(_name(dist) for dist in owners[module])
    return dists


def _provided(requirements: list[str]) -> set[str]:
    """What installing ``requirements`` (and the runtime dependencies) gives by name.

    Only the names listed, plus those installed alongside them that the code imports
    directly: a peer's own dependency (Flask under Flask-APScheduler) counts.
    """
    wanted = {_name(req) for req in [*PROJECT["dependencies"], *requirements]}
    seen: set[str] = set()
    while wanted:
        name = wanted.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            dependencies = requires(name) or []
        except PackageNotFoundError:  # not installed here: its own dependencies are unknown
            continue
        for req in map(Requirement, dependencies):
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                wanted.add(canonicalize_name(req.name))
    return seen


def test_bench_extra_installs_what_the_benchmarks_import() -> None:
    # `pip install -e '.[bench]' && python -m bench` once failed on SQLAlchemyJobStore.
    needed = _imported_distributions(ROOT / "bench")
    # APScheduler's SQLAlchemyJobStore (imported, or named in a config) needs SQLAlchemy,
    # which APScheduler does not install.
    sources = "".join(p.read_text(encoding="utf-8") for p in (ROOT / "bench").glob("*.py"))
    if "SQLAlchemyJobStore" in sources or '"type": "sqlalchemy"' in sources:
        needed.add("sqlalchemy")
    missing = needed - _provided(PROJECT["optional-dependencies"]["bench"])
    assert not missing, f"add {sorted(missing)} to the bench extra in pyproject.toml"
