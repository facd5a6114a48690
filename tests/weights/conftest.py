"""Fixtures for the weights tests: a fault-injecting Hub server, a model published on it, a cache path."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.equipment.hub_faults import FaultyHub
from tests.weights.helpers import COLLECTIONS, REPO_ID, Published, make_model_files

# Tests of the download engine's parts import it as ansible-playbook finds it (the repo's collections/ symlink).
if str(COLLECTIONS) not in sys.path:
    sys.path.insert(0, str(COLLECTIONS))


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[FaultyHub]:
    with FaultyHub(tmp_path / "hub-store", tree_page_size=3) as server:
        yield server


@pytest.fixture
def model(hub: FaultyHub) -> Published:
    files = make_model_files(1, [2_500_000, 1_600_000, 150_000])
    commit = hub.store.publish(REPO_ID, files)
    return Published(REPO_ID, commit, files)


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "hf" / "hub"
