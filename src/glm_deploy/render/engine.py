"""What runs the engine of a plan: a catalog image chosen for the host's CUDA, a user's image, or a native venv.

The image choice is `images.choose_image`, the one preflight checks hosts with; every version the plan ends up
with passes the model's minimum and known-bad checks (`context.check_version`).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

from glm_deploy.catalog import Catalog, EngineSpec, HardwareSpec, ImageSpec, ModelSpec
from glm_deploy.errors import InputError
from glm_deploy.images import DriverTooOldError, ImageChoice, NoImageError, choose_image, version_from_tag
from glm_deploy.render.context import ASSUMED_HOST_CUDA, RenderContext, check_version, known, present
from glm_deploy.render.options import STATE_ROOT
from glm_deploy.versions import parse_version, version_matches


@dataclass
class EngineBuild:
    """What runs the engine: a catalog image, a user's image, or a native venv."""

    image: str | None = None
    image_spec: ImageSpec | None = None
    engine_version: str | None = None
    image_build: dict[str, Any] | None = None
    native: dict[str, Any] | None = None
    # What the chosen image needs in its container on this host (NVIDIA_DISABLE_REQUIRE under minor compat).
    image_env: dict[str, str] = dataclasses.field(default_factory=dict)


def engine_build(context: RenderContext, runtime: str) -> EngineBuild:
    """What runs the engine for `runtime`: the native venv, the user's image, or the catalog's image for the host's
    CUDA (with a derived image where the engine needs a newer transformers for the model)."""
    options, model, engine = context.options, context.model, context.engine
    build = EngineBuild(engine_version=options.engine_version)
    if build.engine_version is not None:
        check_version(model, engine, build.engine_version, context.warnings)
    if runtime == "native":
        _native(context, build)
    elif options.image is not None:
        _users_image(context, build, options.image)
    else:
        _catalog_image(context, build)
    if build.image is not None and build.engine_version is not None:
        _transformers_upgrade(context, build, build.image, build.engine_version)
    return build


def _native(context: RenderContext, build: EngineBuild) -> None:
    native = present(context.engine.native, f"engines.{context.engine.name}.native")
    if context.options.image is not None:
        raise InputError(f"option image does not apply to the native runtime of {context.engine.name}")
    if build.engine_version is not None and build.engine_version != native.version:
        raise InputError(
            f"engine_version {build.engine_version} is not in the catalog for {context.engine.name}",
            hint=f"the catalog installs {native.package}=={native.version}",
        )
    if build.engine_version is None:
        build.engine_version = native.version
        check_version(context.model, context.engine, native.version, context.warnings)
    venv = f"{context.engine.name}-{native.version}"
    build.native = {
        "venv": venv,
        "venv_path": f"{STATE_ROOT}/venvs/{venv}",
        "package": native.package,
        "version": native.version,
        "requirement": f"{native.package}=={native.version}",
        "python": native.python,
        "remove_packages": list(native.remove_packages),
        "system_packages": list(native.system_packages),
        "needs_vllm_dist_info": native.needs_vllm_dist_info,
        "source": native.source,
    }


def _users_image(context: RenderContext, build: EngineBuild, image: str) -> None:
    build.image = image
    if build.engine_version is None:
        build.engine_version = version_from_tag(image)
        if build.engine_version is not None:
            check_version(context.model, context.engine, build.engine_version, context.warnings)
        else:
            context.warnings.append(
                f"image {image} is not from the catalog and its tag names no version: "
                "no minimum or known-bad check was possible; pass engine_version"
            )
    context.warnings.append(f"image {image} is not from the catalog: its CUDA/driver fit is unchecked")


def _catalog_image(context: RenderContext, build: EngineBuild) -> None:
    spec, choice = _select_image(
        context.catalog,
        context.model,
        context.engine,
        context.hardware,
        wanted_version=build.engine_version,
        host_cuda=context.host_cuda,
    )
    build.image_spec, build.image, build.image_env = spec, spec.image, dict(choice.env)
    if build.engine_version is None and spec.version is not None:
        build.engine_version = spec.version
        check_version(context.model, context.engine, spec.version, context.warnings)
    context.warnings.extend(choice.warnings)
    if "UNVERIFIED" in spec.source:
        context.warnings.append(f"image {spec.image}: {spec.source}")
    if context.hardware.vendor == "nvidia" and context.options.cuda_version is None:
        context.warnings.append(
            f"host CUDA version assumed {ASSUMED_HOST_CUDA} (Lambda's driver 570); preflight passes "
            "the real one as option cuda_version"
        )


def _transformers_upgrade(context: RenderContext, build: EngineBuild, image: str, version: str) -> None:
    for upgrade in context.engine.transformers_upgrades:
        if context.model.name not in upgrade.models:
            continue
        if not any(version_matches(pattern, version) for pattern in upgrade.versions):
            continue
        derived = (
            f"localhost/glm-deploy/{slug(image.rsplit('/', maxsplit=1)[-1])}-"
            f"{slug(upgrade.requirement)}".lower()
        )
        build.image_build = {
            "base": image,
            "pip": [upgrade.requirement],
            "image": derived,
            "source": upgrade.source,
        }
        context.warnings.append(
            f"{context.engine.name} {version} needs {upgrade.requirement} for {context.model.name}: "
            f"the engine role builds {derived} from {image}"
        )
        build.image = derived


def _select_image(
    catalog: Catalog,
    model: ModelSpec,
    engine: EngineSpec,
    hardware: HardwareSpec,
    *,
    wanted_version: str | None,
    host_cuda: str,
) -> tuple[ImageSpec, ImageChoice]:
    """The catalog image to run (`images.choose_image`, the one preflight checks hosts with)."""
    try:
        choice = choose_image(
            catalog,
            engine.name,
            driver_version=None,
            engine_version=wanted_version,
            explicit_image=None,
            model=model.name,
            vendor=hardware.vendor,
            gpu_arch=hardware.arch if hardware.vendor == "amd" else None,
            host_cuda=host_cuda if hardware.vendor == "nvidia" else None,
        )
    except NoImageError as error:
        versions = sorted({i.version for i in engine.images if i.version}, key=parse_version)
        wanted = f" version {wanted_version}" if wanted_version else ""
        hint = (
            f"catalog versions: {known(versions) or 'none'}; or pass option image=<repo:tag> "
            "(and cuda_version=<host CUDA> if the host driver is newer)"
        )
        if isinstance(error, DriverTooOldError):
            raise InputError(
                f"the catalog has no {engine.name}{wanted} image for {model.name} on {hardware.name} "
                f"(host CUDA {host_cuda}): {error.message}",
                hint=f"{error.hint}; {hint}" if error.hint else hint,
            ) from error
        raise InputError(
            f"the catalog has no {engine.name}{wanted} image for {model.name} on {hardware.name} "
            f"(host CUDA {host_cuda})",
            hint=hint,
        ) from error
    return present(choice.spec, f"engines.{engine.name} image {choice.image}"), choice


def slug(text: str) -> str:
    """`text` as one word of a name or path: runs of other characters become one dash."""
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-")
