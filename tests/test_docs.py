"""The docs that claim to mirror the code do, and their code runs.

Code blocks follow one convention: a block whose first line is a file name comment
(``# myapp.py``, ``# myapp/jobs.py``, ``# pyproject.toml``) is a complete file;
``# test_x.py, continued`` adds to the file of that name. The files of one page (and of
the pages it builds on, ``BUILDS_ON``) are written to a fresh directory, each package
folder getting an empty ``__init__.py`` when the page shows none. If the page has tests
(``test_*.py``, ``conftest.py``), pytest runs them there with warnings as errors;
otherwise each Python file is imported in a fresh interpreter and, if it defines a
Quart ``app``, the app is served (``test_app()``) and stopped. Every other ``python``
block is a fragment: it must still compile.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from quart_sched._config import KEYS

ROOT = Path(__file__).parent.parent
DOCS = ROOT / "docs"
PAGES = [*sorted(DOCS.rglob("*.md")), ROOT / "README.md"]
BLOCK = re.compile(r"^```(\w+)[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
FILE_NAME = re.compile(r"# ([\w/.-]+\.(?:py|toml))(, continued)?\n")
#: Files a page shows but that must not be imported here: the point of the page is what
#: their import would do.
NOT_IMPORTED = {("howto/security.md", "evil.py")}
#: Pages whose snippets use the files of another page ("myapp/jobs.py is the module of the
#: reference's example app").
BUILDS_ON = {"howto/security.md": ["reference/rest-api.md"]}


def _name(page: Path) -> str:
    return str(page.relative_to(DOCS if DOCS in page.parents else ROOT))


def _blocks(page: Path) -> list[tuple[str, str, int]]:
    """(language, body, line) of each fenced block of ``page``."""
    text = page.read_text(encoding="utf-8")
    return [
        (m.group(1), m.group(2), text.count("\n", 0, m.start()) + 1) for m in BLOCK.finditer(text)
    ]


def _files(page: Path) -> dict[str, str]:
    files: dict[str, str] = {}
    for language, body, line in _blocks(page):
        named = FILE_NAME.match(body)
        if named and language in ("python", "toml"):
            name, continued = named.groups()
            if continued:
                assert name in files, f"{_name(page)}:{line}: {name} continued before shown"
                files[name] += "\n\n" + body
            else:
                assert name not in files, f"{_name(page)}:{line}: {name} shown twice"
                files[name] = body
    return files


PYTHON_BLOCKS = [
    pytest.param(body, id=f"{_name(page)}:{line}")
    for page in PAGES
    for language, body, line in _blocks(page)
    if language == "python"
]
PROJECTS = [pytest.param(page, id=_name(page)) for page in PAGES if _files(page)]


def test_config_reference_lists_every_key_as_the_code_defines_it() -> None:
    text = (DOCS / "reference" / "config.md").read_text(encoding="utf-8")
    for key, (kind, default, meaning) in KEYS.items():
        row = f"| `{key}` | `{kind.replace('|', chr(92) + '|')}` | `{default}` | {meaning} |"
        assert row in text, f"docs/reference/config.md: no row {row!r}"


def test_every_doc_page_is_in_the_site_navigation() -> None:
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    for page in DOCS.rglob("*.md"):
        assert f" {page.relative_to(DOCS)}\n" in nav, f"{page} is not in mkdocs.yml's nav"


@pytest.mark.parametrize("body", PYTHON_BLOCKS)
def test_python_block_compiles(body: str) -> None:
    # Fragments may await: they show code that runs inside an async view or job.
    compile(body, "<doc block>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


_SERVE = textwrap.dedent(
    """
    import asyncio, importlib, sys
    from quart import Quart

    module = importlib.import_module(sys.argv[1])
    app = getattr(module, "app", None)
    if isinstance(app, Quart):
        async def serve():
            async with app.test_app():
                await asyncio.sleep(0.2)
        asyncio.run(serve())
    """
)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("page", PROJECTS)
def test_complete_files_run(page: Path, tmp_path: Path) -> None:
    files = _files(page)
    for base in BUILDS_ON.get(_name(page), []):
        for name, body in _files(DOCS / base).items():
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name).write_text(body, encoding="utf-8")
    for name, body in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(body, encoding="utf-8")
    for folder in {(tmp_path / name).parent for name in files} - {tmp_path}:
        (folder / "__init__.py").touch()  # exist_ok: the page may show its own
    env = {
        "PYTHONPATH": str(tmp_path),
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        # the secrets the pages read from the environment
        "SCHEDULER_PASSWORD": "docs-password",
        "SCHEDULER_TOKEN": "docs-token",
    }
    if any(Path(name).name.startswith(("test_", "conftest")) for name in files):
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error"]
        proc = subprocess.run(
            command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=100
        )
        assert proc.returncode == 0, f"{_name(page)}: pytest failed:\n{proc.stdout}{proc.stderr}"
        return
    for name in files:
        if not name.endswith(".py") or (_name(page), name) in NOT_IMPORTED:
            continue
        module = name.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
        proc = subprocess.run(
            [sys.executable, "-W", "error", "-c", _SERVE, module],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, f"{_name(page)}: {name} does not run:\n{proc.stderr}"


def test_docstring_reference_covers_the_public_api() -> None:
    import quart_sched
    import quart_sched.auth

    text = (DOCS / "reference" / "docstrings.md").read_text(encoding="utf-8")
    for name in quart_sched.__all__:
        shown = f"::: quart_sched.{name}\n" in text or f"`{name}`" in text
        assert shown, f"docs/reference/docstrings.md does not document quart_sched.{name}"
    assert "::: quart_sched.auth\n" in text  # renders every name of quart_sched.auth.__all__
