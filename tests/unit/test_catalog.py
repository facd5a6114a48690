"""The catalog is consistent, names its sources, and a broken catalog is refused at load time."""

from __future__ import annotations

import re
import shutil
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml

from glm_deploy.catalog import (
    Catalog,
    load_catalog,
    parse_version,
    version_at_least,
    version_matches,
)
from glm_deploy.catalog_reader import Reader, read_fields
from glm_deploy.catalog_types import ImageSpec, TransformersUpgrade
from glm_deploy.errors import CatalogError

REQUIRED_MODELS = {
    "glm-5-fp8",
    "glm-5",
    "glm-5.1-fp8",
    "glm-5.2-fp8",
    "glm-5-nvfp4",
    "glm-5-nvfp4-community",
    "glm-tiny",
}
REQUIRED_ENGINES = {"sglang", "vllm", "vllm-cpu"}
REQUIRED_HARDWARE = {"b200", "h200", "h100", "mi300x", "mi325x", "mi355x", "cpu"}


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog()


def shipped_catalog_dir() -> Path:
    return Path(str(resources.files("glm_deploy").joinpath("catalog")))


def test_catalog_holds_every_required_entry(catalog: Catalog) -> None:
    assert set(catalog.models) >= REQUIRED_MODELS
    assert set(catalog.engines) >= REQUIRED_ENGINES
    assert set(catalog.hardware) >= REQUIRED_HARDWARE


def test_every_model_names_known_hardware_and_engines(catalog: Catalog) -> None:
    for model in catalog.models.values():
        assert set(model.hardware) <= set(catalog.hardware), model.name
        assert set(model.engines) <= set(catalog.engines), model.name
        runnable = [name for name, profile in model.hardware.items() if profile.unsupported is None]
        assert runnable, f"{model.name} runs nowhere"
        for name in runnable:
            profile = model.hardware[name]
            assert profile.gpus is not None and profile.nodes is not None
            per_node = catalog.hardware[name].gpus_per_node
            # A layout never asks a node for more GPUs than it has.
            assert profile.nodes * per_node >= profile.gpus, (model.name, name)


def _entries_needing_source(raw: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    entries: list[tuple[str, dict[str, Any]]] = []
    for name, model in raw["models"].items():
        entries.append((f"models.{name}", model))
        entries += [(f"models.{name}.hardware.{hw}", p) for hw, p in model["hardware"].items()]
        entries.append((f"models.{name}.speculative", model["speculative"]))
        entries += [(f"models.{name}.known_bad[{i}]", bad) for i, bad in enumerate(model["known_bad"])]
    for name, engine in raw["engines"].items():
        entries += [(f"engines.{name}.images[{i}]", image) for i, image in enumerate(engine["images"])]
        entries += [(f"engines.{name}.known_bad[{i}]", bad) for i, bad in enumerate(engine["known_bad"])]
    for name, hardware in raw["hardware"].items():
        entries.append((f"hardware.{name}", hardware))
        entries += [
            (f"hardware.{name}.engine_flags.{e}", flags) for e, flags in hardware["engine_flags"].items()
        ]
    return entries


def test_every_entry_names_its_source(catalog: Catalog) -> None:
    entries = _entries_needing_source(catalog.raw)
    assert len(entries) > 50
    for where, entry in entries:
        source = entry.get("source")
        assert isinstance(source, str) and len(source) > 10, f"{where} has no source"


def test_facts_not_from_the_facts_file_are_marked_unverified(catalog: Catalog) -> None:
    """Guesses (ROCm tags, sizes by analogy) say so, so that a reader knows what to check."""
    rocm_images = [i for e in catalog.engines.values() for i in e.images if i.rocm]
    assert rocm_images
    assert all("UNVERIFIED" in image.source for image in rocm_images)
    assert "UNVERIFIED" in catalog.models["glm-5.2-fp8"].hardware["h100"].source


def test_images_have_versions_cuda_and_a_driver_minimum(catalog: Catalog) -> None:
    for engine in catalog.engines.values():
        for image in engine.images:
            assert re.match(r"^[a-z0-9./-]+:[A-Za-z0-9._-]+$", image.image), image.image
            if image.version is not None:
                parse_version(image.version)
            assert image.cuda is None or image.rocm is None, f"{image.image}: both cuda and rocm"
            if image.cuda is None and image.rocm is None:
                # A CPU image (the sandbox's): only for an engine none of whose images is a GPU one.
                assert not any(other.cuda or other.rocm for other in engine.images), image.image
            if image.cuda:
                assert image.cuda in catalog.cuda_driver_minimum
    assert catalog.cuda_driver_minimum == {"12.8": 570, "12.9": 575, "13.0": 580}


def test_each_cuda_engine_has_cuda_12_and_13_images(catalog: Catalog) -> None:
    for name in ("sglang", "vllm"):
        majors = {image.cuda.split(".")[0] for image in catalog.engines[name].images if image.cuda}
        assert majors == {"12", "13"}, name


def test_known_bad_versions_and_model_minimums(catalog: Catalog) -> None:
    sglang_bad = {bad.version: bad.reason for bad in catalog.engines["sglang"].known_bad}
    assert "0.5.10rc0" in sglang_bad and "flashmla" in sglang_bad["0.5.10rc0"].lower()
    glm51_bad = {(bad.engine, bad.version) for bad in catalog.models["glm-5.1-fp8"].known_bad}
    assert glm51_bad == {("vllm", "0.20"), ("vllm", "0.21")}
    assert catalog.models["glm-5-fp8"].min_engine_versions["vllm"] == "0.16.0"
    assert catalog.models["glm-5.1-fp8"].min_engine_versions["vllm"] == "0.19.1"
    assert catalog.models["glm-5.2-fp8"].min_engine_versions["vllm"] == "0.23.0"
    assert catalog.models["glm-5.2-fp8"].min_transformers == "5.9.0"
    upgrades = catalog.engines["vllm"].transformers_upgrades
    assert any("0.19.0" in u.versions and "glm-5.1-fp8" in u.models for u in upgrades)


def test_model_facts(catalog: Catalog) -> None:
    models = catalog.models
    assert models["glm-5-fp8"].hf_repo == "zai-org/GLM-5-FP8"
    assert models["glm-5-nvfp4"].hf_repo == "nvidia/GLM-5-NVFP4"
    assert models["glm-5-nvfp4-community"].has_mtp is False
    assert models["glm-5-nvfp4"].has_mtp is True
    assert models["glm-tiny"].architecture == "Glm4MoeForCausalLM"
    assert models["glm-5.1-fp8"].architecture == "GlmMoeDsaForCausalLM"
    assert models["glm-5"].hardware["h100"].gpus == 32
    assert models["glm-5-fp8"].hardware["h100"].nodes == 2
    assert models["glm-5-fp8"].hardware["mi300x"].unsupported is not None
    assert models["glm-5.1-fp8"].hardware["mi355x"].gpus == 8
    assert models["glm-5-nvfp4"].hardware["b200"].gpus == 4
    assert models["glm-5.2-fp8"].context_length == 1048576


@pytest.mark.parametrize(
    ("hardware", "product_name"),
    [
        ("b200", "NVIDIA B200"),
        ("h200", "NVIDIA H200"),
        ("h100", "NVIDIA H100 80GB HBM3"),
        ("mi300x", "AMD Instinct MI300X"),
        ("mi355x", "AMD Instinct MI355X"),
    ],
)
def test_gpu_name_patterns_match_product_names(catalog: Catalog, hardware: str, product_name: str) -> None:
    matching = [
        name
        for name, spec in catalog.hardware.items()
        if any(re.search(pattern, product_name) for pattern in spec.gpu_name_patterns)
    ]
    assert matching == [hardware]


def test_hardware_owned_engine_flags(catalog: Catalog) -> None:
    b200 = catalog.hardware["b200"].engine_flags["sglang"]
    assert b200.args["--attention-backend"] == "nsa"
    assert b200.args["--moe-runner-backend"] == "flashinfer_trtllm"
    amd = catalog.hardware["mi300x"].engine_flags["sglang"]
    assert amd.args["--nsa-prefill-backend"] == "tilelang"
    assert amd.args["--watchdog-timeout"] == "1200"
    assert amd.mem_fraction == pytest.approx(0.80)
    assert catalog.hardware["cpu"].gpus_per_node == 0


@pytest.mark.parametrize(
    ("version", "minimum", "expected"),
    [
        ("0.19.1", "0.19.1", True),
        ("0.19.0", "0.19.1", False),
        ("0.23.0", "0.19.1", True),
        ("0.5.10rc0", "0.5.10", False),
        ("0.5.10", "0.5.9", True),
        ("v0.19.1", "0.19", True),
    ],
)
def test_version_at_least(version: str, minimum: str, expected: bool) -> None:
    assert version_at_least(version, minimum) is expected


@pytest.mark.parametrize(
    ("pattern", "version", "expected"),
    [
        ("0.20", "0.20.0", True),
        ("0.20", "0.20.3", True),
        ("0.20", "0.2", False),
        ("0.20", "0.21.0", False),
        ("0.5.10rc0", "0.5.10rc0", True),
        ("0.5.10rc0", "0.5.10", False),
    ],
)
def test_version_matches(pattern: str, version: str, expected: bool) -> None:
    assert version_matches(pattern, version) is expected


# ------------------------------------------------------------------------------------- a broken catalog


@pytest.fixture
def catalog_copy(tmp_path: Path) -> Path:
    target = tmp_path / "catalog"
    shutil.copytree(shipped_catalog_dir(), target)
    return target


def _edit(path: Path, change: Any) -> None:
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def test_copy_of_shipped_catalog_loads(catalog_copy: Path) -> None:
    assert set(load_catalog(catalog_copy).models) == set(load_catalog().models)


def test_unknown_hardware_reference_is_refused(catalog_copy: Path) -> None:
    def change(data: dict[str, Any]) -> None:
        data["models"]["glm-5-fp8"]["hardware"]["a100"] = {
            "gpus": 8,
            "nodes": 1,
            "source": "made up for the test",
        }

    _edit(catalog_copy / "models.yml", change)
    with pytest.raises(CatalogError, match=r"models\.glm-5-fp8\.hardware names unknown hardware 'a100'"):
        load_catalog(catalog_copy)


def test_missing_source_is_refused(catalog_copy: Path) -> None:
    def change(data: dict[str, Any]) -> None:
        del data["engines"]["vllm"]["images"][0]["source"]

    _edit(catalog_copy / "engines.yml", change)
    with pytest.raises(CatalogError, match=r"engines\.vllm\.images\[0\] lacks the key 'source'"):
        load_catalog(catalog_copy)


def test_unquoted_number_flag_value_is_refused(catalog_copy: Path) -> None:
    def change(data: dict[str, Any]) -> None:
        data["hardware"]["b200"]["engine_flags"]["sglang"]["args"]["--ep"] = 1

    _edit(catalog_copy / "hardware.yml", change)
    with pytest.raises(CatalogError, match=r"--ep must be a quoted string"):
        load_catalog(catalog_copy)


def test_unreadable_catalog_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match=r"cannot read catalog file .*models\.yml"):
        load_catalog(tmp_path)


def test_entries_are_read_by_their_fields_names_and_types() -> None:
    # Left out: an optional text is None, a list is empty, a switch marked OFF_UNLESS_SET is off.
    image = read_fields(ImageSpec, Reader({"image": "repo/engine:v1", "source": "a page"}, "engines.e.images[0]"))
    assert image == ImageSpec(
        image="repo/engine:v1",
        version=None,
        cuda=None,
        rocm=None,
        archs=(),
        models=(),
        preferred=False,
        floating=False,
        source="a page",
    )
    # A list marked REQUIRED, a text and a switch of the wrong type: each refused with the entry's path and key.
    upgrade = {"versions": ["0.1"], "requirement": "transformers>=5", "source": "a page"}
    with pytest.raises(CatalogError, match=r"engines\.e\.transformers_upgrades\[0\] lacks the key 'models'"):
        read_fields(TransformersUpgrade, Reader(upgrade, "engines.e.transformers_upgrades[0]"))
    with pytest.raises(CatalogError, match=r"engines\.e\.images\[0\]\.source must be a non-empty string"):
        read_fields(ImageSpec, Reader({"image": "repo/engine:v1", "source": ""}, "engines.e.images[0]"))
    with pytest.raises(CatalogError, match=r"engines\.e\.images\[0\]\.preferred must be true or false"):
        read_fields(ImageSpec, Reader({"image": "x", "source": "s", "preferred": "yes"}, "engines.e.images[0]"))
