"""Shared helpers for the GPU-host tests: fixture files and the collection's module_utils on sys.path."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "gpu"
COLLECTION = REPO / "collection"

# The collection resolves as ansible_collections.glm.deploy through the repo's collections/ symlink, exactly
# as ansible-playbook finds it; putting that folder on sys.path lets tests import module_utils the same way.
if str(REPO / "collections") not in sys.path:
    sys.path.insert(0, str(REPO / "collections"))


def read_fixture(*parts: str) -> str:
    return FIXTURES.joinpath(*parts).read_text()


@pytest.fixture
def fixture_text():
    return read_fixture
