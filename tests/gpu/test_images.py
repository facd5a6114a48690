"""Image choice from the driver and the real catalog: CUDA 12.x on a 570 driver, CUDA 13 on 580, refusals."""

from __future__ import annotations

import pytest

from glm_deploy.catalog import load_catalog
from glm_deploy.errors import InputError
from glm_deploy.images import choose_image, cuda_from_tag

CATALOG = load_catalog()
DRIVER_570 = "570.148.08"
DRIVER_580 = "580.95.05"
GPU_ENGINES = ["sglang", "vllm"]


def cuda13_image(engine: str) -> str:
    return next(
        image.image for image in CATALOG.engines[engine].images if image.cuda == "13.0" and not image.models
    )


@pytest.mark.parametrize("engine", GPU_ENGINES)
def test_driver_570_gets_a_cuda_12_image_with_the_runtime_check_lifted(engine):
    choice = choose_image(
        CATALOG, engine, driver_version=DRIVER_570, engine_version=None, explicit_image=None
    )
    assert choice.cuda is not None
    assert choice.cuda.startswith("12.")
    assert "cu130" not in choice.image
    # CUDA 12.9 on a 12.8 driver runs only under minor-version compatibility, which the runtime must be told.
    assert dict(choice.env) == {"NVIDIA_DISABLE_REQUIRE": "1"}
    assert "minor-version compatibility" in choice.reason


@pytest.mark.parametrize("engine", GPU_ENGINES)
def test_driver_580_gets_the_cuda_13_image(engine):
    choice = choose_image(
        CATALOG, engine, driver_version=DRIVER_580, engine_version=None, explicit_image=None
    )
    assert choice.cuda == "13.0"
    assert choice.image == cuda13_image(engine)
    assert dict(choice.env) == {}


@pytest.mark.parametrize("engine", GPU_ENGINES)
def test_explicit_cuda_13_image_on_570_is_refused_with_the_reason(engine):
    image = cuda13_image(engine)
    with pytest.raises(InputError) as caught:
        choose_image(CATALOG, engine, driver_version=DRIVER_570, engine_version=None, explicit_image=image)
    message = str(caught.value)
    assert image in message
    assert "CUDA 13.0 needs driver >= 580" in message
    assert "nvidia-container-cli: requirement error: unsatisfied condition: cuda>=13.0" in message
    assert "gpu_host_driver_branch: '580'" in message


@pytest.mark.parametrize("engine", GPU_ENGINES)
def test_explicit_cuda_13_image_on_580_is_accepted(engine):
    image = cuda13_image(engine)
    choice = choose_image(
        CATALOG, engine, driver_version=DRIVER_580, engine_version=None, explicit_image=image
    )
    assert (choice.image, choice.cuda) == (image, "13.0")
    assert "from the catalog" in choice.reason


def test_glm_5_2_uses_its_own_vllm_tags():
    on_570 = choose_image(
        CATALOG,
        "vllm",
        driver_version=DRIVER_570,
        engine_version=None,
        explicit_image=None,
        model="glm-5.2-fp8",
    )
    on_580 = choose_image(
        CATALOG,
        "vllm",
        driver_version=DRIVER_580,
        engine_version=None,
        explicit_image=None,
        model="glm-5.2-fp8",
    )
    assert on_570.image == "vllm/vllm-openai:glm52-cu129"
    assert on_580.image == "vllm/vllm-openai:glm52"
    other = choose_image(
        CATALOG,
        "vllm",
        driver_version=DRIVER_580,
        engine_version=None,
        explicit_image=None,
        model="glm-5.1-fp8",
    )
    assert "glm52" not in other.image


def test_floating_tag_comes_with_a_digest_warning():
    choice = choose_image(
        CATALOG,
        "sglang",
        driver_version=DRIVER_580,
        engine_version=None,
        explicit_image=None,
        model="glm-5.2-fp8",
    )
    assert choice.image == "lmsysorg/sglang:latest"
    assert any("digest" in warning for warning in choice.warnings)


def test_pinned_engine_version_with_only_a_cuda_12_image_runs_on_580():
    choice = choose_image(
        CATALOG, "vllm", driver_version=DRIVER_580, engine_version="0.19.0", explicit_image=None
    )
    assert (choice.image, choice.cuda) == ("vllm/vllm-openai:v0.19.0", "12.9")
    assert dict(choice.env) == {}


def test_unknown_engine_version_lists_what_exists():
    with pytest.raises(InputError, match=r"no nvidia image for vllm 0\.18\.0") as caught:
        choose_image(CATALOG, "vllm", driver_version=DRIVER_580, engine_version="0.18.0", explicit_image=None)
    assert "vllm/vllm-openai:v0.19.1" in str(caught.value)


def test_known_bad_engine_version_is_refused():
    with pytest.raises(InputError, match=r"known bad.*FlashMLA"):
        choose_image(
            CATALOG, "sglang", driver_version=DRIVER_580, engine_version="0.5.10rc0", explicit_image=None
        )


def test_driver_older_than_any_listed_cuda_is_refused():
    with pytest.raises(InputError) as caught:
        choose_image(CATALOG, "vllm", driver_version="535.183.01", engine_version=None, explicit_image=None)
    assert "driver 535.183.01 is older than every CUDA release" in str(caught.value)


def test_explicit_image_outside_the_catalog_is_checked_by_its_tag():
    with pytest.raises(InputError, match="from its tag"):
        choose_image(
            CATALOG,
            "vllm",
            driver_version=DRIVER_570,
            engine_version=None,
            explicit_image="registry.example/vllm:nightly-cu130",
        )
    choice = choose_image(
        CATALOG,
        "vllm",
        driver_version=DRIVER_570,
        engine_version=None,
        explicit_image="registry.example/vllm:nightly-cu128",
    )
    assert choice.cuda == "12.8"
    assert dict(choice.env) == {}


def test_explicit_image_with_unknown_cuda_goes_ahead_with_a_warning():
    choice = choose_image(
        CATALOG,
        "sglang",
        driver_version=DRIVER_570,
        engine_version=None,
        explicit_image="registry.example/sglang:mine",
    )
    assert choice.cuda is None
    assert "cannot be checked against driver 570.148.08" in choice.warnings[0]


def test_explicit_image_pinned_by_digest_is_recognised():
    image = "vllm/vllm-openai:v0.19.1-cu130@sha256:" + "a" * 64
    with pytest.raises(InputError, match="from the catalog"):
        choose_image(CATALOG, "vllm", driver_version=DRIVER_570, engine_version=None, explicit_image=image)


def test_explicit_rocm_image_on_nvidia_is_refused():
    with pytest.raises(InputError, match="ROCm"):
        choose_image(
            CATALOG,
            "sglang",
            driver_version=DRIVER_580,
            engine_version=None,
            explicit_image="lmsysorg/sglang:v0.5.10-rocm700-mi30x",
        )


def test_header_cuda_from_nvidia_smi_takes_precedence_over_the_table():
    # A 575 driver supports 12.9 per the table; if nvidia-smi says 12.9 the CUDA 12.9 image needs no override.
    choice = choose_image(
        CATALOG,
        "vllm",
        driver_version="575.57.08",
        engine_version=None,
        explicit_image=None,
        host_cuda="12.9",
    )
    assert (choice.cuda, dict(choice.env)) == ("12.9", {})


@pytest.mark.parametrize(("arch", "suffix"), [("gfx942", "mi30x"), ("gfx950", "mi35x")])
def test_amd_picks_the_rocm_image_for_the_gpu_arch(arch, suffix):
    choice = choose_image(
        CATALOG,
        "sglang",
        driver_version="6.10.5",
        engine_version=None,
        explicit_image=None,
        vendor="amd",
        gpu_arch=arch,
    )
    assert choice.image.endswith(suffix)
    assert choice.rocm == "7.0"


@pytest.mark.parametrize(
    ("image", "cuda"),
    [
        ("vllm/vllm-openai:v0.19.1-cu130", "13.0"),
        ("vllm/vllm-openai:v0.20.0-cu129", "12.9"),
        ("lmsysorg/sglang:v0.5.10-cu12", "12"),
        ("nvidia/cuda:12.8.1-cudnn-devel-ubuntu24.04", "12.8"),
        ("vllm/vllm-openai:v0.19.1", None),
        ("localhost:5000/vllm", None),
        ("vllm/vllm-openai:v0.19.1-cu130@sha256:" + "b" * 64, "13.0"),
    ],
)
def test_cuda_from_tag(image, cuda):
    assert cuda_from_tag(image) == cuda
