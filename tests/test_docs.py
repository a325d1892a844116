"""The docs that claim to mirror the code do."""

from __future__ import annotations

from pathlib import Path

from quart_sched._config import KEYS

DOCS = Path(__file__).parent.parent / "docs"


def test_config_reference_lists_every_key_as_the_code_defines_it() -> None:
    text = (DOCS / "reference" / "config.md").read_text(encoding="utf-8")
    for key, (kind, default, meaning) in KEYS.items():
        row = f"| `{key}` | `{kind.replace('|', chr(92) + '|')}` | `{default}` | {meaning} |"
        assert row in text, f"docs/reference/config.md: no row {row!r}"


def test_every_doc_page_is_in_the_site_navigation() -> None:
    nav = (DOCS.parent / "mkdocs.yml").read_text(encoding="utf-8")
    for page in DOCS.rglob("*.md"):
        assert f" {page.relative_to(DOCS)}\n" in nav, f"{page} is not in mkdocs.yml's nav"


def test_docstring_reference_covers_the_public_api() -> None:
    import quart_sched
    import quart_sched.auth

    text = (DOCS / "reference" / "docstrings.md").read_text(encoding="utf-8")
    for name in quart_sched.__all__:
        shown = f"::: quart_sched.{name}\n" in text or f"`{name}`" in text
        assert shown, f"docs/reference/docstrings.md does not document quart_sched.{name}"
    assert "::: quart_sched.auth\n" in text  # renders every name of quart_sched.auth.__all__
