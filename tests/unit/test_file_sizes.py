"""The project's Python stays in files a reader can hold: none over 600 lines in the package (src/) or the
collection's plugins (a concern that outgrows that is split along its seams, as the Hub download was into
module_utils/hub_download/ and the sandbox's Hub into glm_deploy/sandbox/hub/)."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LIMIT = 600


@pytest.mark.parametrize(
    ("tree", "known"),
    [
        ("collection/plugins", "module_utils/hub_download/prefetch.py"),
        ("src/glm_deploy", "sandbox/hub/server.py"),
    ],
)
def test_no_python_file_is_over_600_lines(tree: str, known: str) -> None:
    root = ROOT / tree
    sizes = {
        str(path.relative_to(root)): len(path.read_text().splitlines())
        for path in sorted(root.rglob("*.py"))
        if "__pycache__" not in path.parts
    }
    assert known in sizes, f"the walk found the files of {tree}"
    over = {name: lines for name, lines in sizes.items() if lines > LIMIT}
    assert over == {}, f"over {LIMIT} lines in {tree}: {over}; split them along their seams"
