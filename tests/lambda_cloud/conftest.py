"""What the Lambda Cloud tests share: a key made for the run, the stand-in serving it, and the collection's Lambda
code loaded from its files."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.equipment.lambda_api import LambdaCloudStandIn
from tests.equipment.load import load_file

REPO = Path(__file__).resolve().parents[2]
MODULE_UTILS = REPO / "collection" / "plugins" / "module_utils"


@pytest.fixture(scope="module")
def lambda_api() -> Any:
    return load_file("lambda_cloud_api", MODULE_UTILS / "lambda_cloud_api.py")


@pytest.fixture(scope="module")
def lambda_instances() -> Any:
    return load_file("lambda_cloud_instances", MODULE_UTILS / "lambda_cloud_instances.py")


@pytest.fixture
def api_key() -> str:
    """A key no output may contain: long and unlike anything else a test prints."""
    return f"secret_{uuid.uuid4().hex}{uuid.uuid4().hex}"


@pytest.fixture
def stand_in(api_key: str) -> Iterator[LambdaCloudStandIn]:
    with LambdaCloudStandIn(api_key) as api:
        yield api
