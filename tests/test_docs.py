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
from quart import Quart

from quart_sched import APScheduler
from quart_sched._config import KEYS
from quart_sched._openapi import openapi_document

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


REST_REFERENCE = DOCS / "reference" / "rest-api.md"
TABLE_START = "<!-- routes: generated from the app by `python tests/test_docs.py`; do not edit -->"
TABLE_END = "<!-- end of routes -->"
#: Flask-APScheduler's routes, by view name; the app's other routes are quart_sched's own.
FLASK_APSCHEDULER_VIEWS = (
    *("get_scheduler_info", "pause_scheduler", "resume_scheduler", "start_scheduler"),
    *("shutdown_scheduler", "add_job", "get_jobs", "get_job", "update_job", "delete_job"),
    *("pause_job", "resume_job", "run_job"),
)


def _slug(heading: str) -> str:
    # Python-Markdown's toc slugify, which MkDocs uses for heading anchors
    text = re.sub(r"[^\w\s-]", "", heading.replace("`", "")).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def _sections(text: str) -> list[tuple[str, str]]:
    """(heading, body) of each section of a page."""
    parts = re.split(r"^#{2,4} (.+)$", text, flags=re.MULTILINE)
    return list(zip(parts[1::2], parts[2::2], strict=True))


def route_table() -> str:
    """The route table of docs/reference/rest-api.md, from the routes the app serves and
    the status codes its OpenAPI document declares."""
    app = Quart("route_table")
    app.config.update(SCHEDULER_API_ENABLED=True, SCHEDULER_HISTORY=False)
    ext = APScheduler(app=app)
    operations = {
        (method.upper(), path): operation
        for path, item in openapi_document(ext.api_prefix)["paths"].items()
        for method, operation in item.items()
        if isinstance(operation, dict) and "responses" in operation
    }
    text = REST_REFERENCE.read_text(encoding="utf-8")
    # The sections that describe routes, the generated table left out.
    text = re.sub(f"{re.escape(TABLE_START)}.*?{re.escape(TABLE_END)}", "", text, flags=re.S)
    sections = _sections(text)
    rows = ["| method and path | view name | success | other answers |", "|---|---|---|---|"]
    for rule in app.url_map.iter_rules():
        if not rule.endpoint.startswith(ext.endpoint_prefix):
            continue
        view = rule.endpoint.removeprefix(ext.endpoint_prefix)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            # A route the OpenAPI document leaves out (not JSON: a page) has no codes here.
            operation = operations.get((method, re.sub(r"<(\w+)>", r"{\1}", rule.rule)), {})
            assert operation.get("operationId", view) == view, (rule.rule, method)
            route = f"{method} {rule.rule.replace('<job_id>', '<id>')}"
            # Link to the route's own section, else to the first section that names it.
            anchor = next(
                (_slug(h) for h, _ in sections if h.startswith(f"`{route}")),
                next((_slug(h) for h, body in sections if f"`{route}`" in body), None),
            )
            success, other = [], []
            for code, response in operation.get("responses", {}).items():
                if code.startswith("2"):
                    text = response["description"]
                    success.append(
                        code if code == "204" else f"{code} {text[0].lower()}{text[1:]}"
                    )
                else:
                    other.append(code)
            shown = f"[`{route}`](#{anchor})" if anchor else f"`{route}`"
            rows.append(
                f"| {shown} | `{view}` | {'; '.join(success)} | {', '.join(sorted(other))} |"
            )
    own = len(rows) - 2 - len(FLASK_APSCHEDULER_VIEWS)
    return "\n".join(
        [
            TABLE_START,
            "",
            *rows,
            "",
            f"The first {len(FLASK_APSCHEDULER_VIEWS)} are Flask-APScheduler's, with the same "
            "paths, methods, view names and",
            f"success codes. The other {own} are quart_sched's own. Every `GET` route also "
            "answers `HEAD`.",
            "",
            TABLE_END,
        ]
    )


def _write_route_table() -> None:
    text = REST_REFERENCE.read_text(encoding="utf-8")
    start, end = text.index(TABLE_START), text.index(TABLE_END) + len(TABLE_END)
    REST_REFERENCE.write_text(text[:start] + route_table() + text[end:], encoding="utf-8")


def test_rest_reference_lists_every_route_the_app_serves() -> None:
    text = REST_REFERENCE.read_text(encoding="utf-8")
    assert route_table() in text, (
        "docs/reference/rest-api.md's route table differs from the routes the app serves: "
        "run `python tests/test_docs.py` to regenerate it"
    )
    # The counts in prose: Flask-APScheduler's routes, and how many quart_sched adds.
    app = Quart("route_count")
    app.config.update(SCHEDULER_API_ENABLED=True, SCHEDULER_HISTORY=False)
    ext = APScheduler(app=app)
    own = sum(
        len(rule.methods - {"HEAD", "OPTIONS"})
        for rule in app.url_map.iter_rules()
        if rule.endpoint.startswith(ext.endpoint_prefix)
    ) - len(FLASK_APSCHEDULER_VIEWS)
    assert f"Flask-APScheduler's 13 HTTP routes and {own} of its own" in text


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


if __name__ == "__main__":
    _write_route_table()
