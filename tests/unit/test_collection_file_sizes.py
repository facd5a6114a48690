"""The collection's Python stays in files a reader can hold: none over 600 lines (a concern that outgrows that is
split along its seams, as the Hub download was into module_utils/hub_download/)."""

from __future__ import annotations

from pathlib import Path

PLUGINS = Path(__file__).resolve().parents[2] / "collection" / "plugins"
LIMIT = 600


def test_no_python_file_of_the_collection_plugins_is_over_600_lines() -> None:
    sizes = {
        str(path.relative_to(PLUGINS)): len(path.read_text().splitlines())
        for path in sorted(PLUGINS.rglob("*.py"))
        if "__pycache__" not in path.parts
    }
    assert "module_utils/hub_download/prefetch.py" in sizes, "the walk found the collection's plugins"
    over = {name: lines for name, lines in sizes.items() if lines > LIMIT}
    assert over == {}, f"over {LIMIT} lines: {over}; split them along their seams"
