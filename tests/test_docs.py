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


def test_every_doc_page_is_linked_from_the_index() -> None:
    index = (DOCS / "index.md").read_text(encoding="utf-8")
    for page in DOCS.rglob("*.md"):
        if page.name != "index.md":
            assert str(page.relative_to(DOCS)) in index, f"{page} is not linked from index.md"
