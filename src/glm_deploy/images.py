"""Choose the engine image a GPU host can start, from its driver and the catalog.

A container image is built against one CUDA release; the NVIDIA container runtime refuses to start it when the
host's driver supports an older CUDA (`nvidia-container-cli: requirement error: unsatisfied condition:
cuda>=13.0`). Within one CUDA major release the driver can still run newer minor releases (CUDA minor-version
compatibility), so a CUDA 12.9 image runs on a 570 driver (CUDA 12.8) once the runtime's check is lifted with
NVIDIA_DISABLE_REQUIRE=1; a CUDA 13 image on that driver cannot work at all.

`choose_image` prefers the newest CUDA the driver supports outright, then a same-major image under
minor-version compatibility, and refuses anything newer. An explicit image is checked the same way: its CUDA
is read from the catalog when the catalog lists it, else from its tag suffix (`-cu130`, `-cu129`, `-cu12`);
when neither tells, the choice goes ahead with a warning.

This is the one image choice: the renderer (`glm_deploy.render`) calls it with the host CUDA it assumes or
was given, preflight with the driver the host reports, so a plan and its preflight agree on the image.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from glm_deploy.catalog import Catalog, EngineSpec, ImageSpec, ModelSpec, known_bad_for
from glm_deploy.errors import InputError
from glm_deploy.versions import cuda_tuple, version_at_least, version_order

CONTAINER_CLI_ERROR = "nvidia-container-cli: requirement error: unsatisfied condition: cuda>={cuda}"
MINOR_COMPAT_ENV = {"NVIDIA_DISABLE_REQUIRE": "1"}


class NoImageError(InputError):
    """The catalog has no image of the engine (version) for this model and host."""


class DriverTooOldError(NoImageError):
    """The image needs a newer driver than the host has; installing a newer driver branch would fix it."""


@dataclass(frozen=True)
class ImageChoice:
    """The image to run, the CUDA it was built for, and why it was chosen."""

    image: str
    cuda: str | None
    reason: str
    # Container environment the image needs on this host (NVIDIA_DISABLE_REQUIRE under minor-version compat).
    env: Mapping[str, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    engine_version: str | None = None
    rocm: str | None = None
    # The catalog entry chosen (None for an explicit image the catalog does not list).
    spec: ImageSpec | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "cuda": self.cuda,
            "rocm": self.rocm,
            "reason": self.reason,
            "env": dict(self.env),
            "warnings": list(self.warnings),
            "engine_version": self.engine_version,
        }


@dataclass(frozen=True)
class _Fit:
    """How an image's CUDA relates to what the driver supports."""

    usable: bool
    needs_minor_compat: bool
    explanation: str


def engine_entry(catalog: Catalog, engine: str) -> EngineSpec:
    if engine not in catalog.engines:
        raise InputError(
            f"engine {engine!r} is not in the catalog",
            hint=f"use one of: {', '.join(sorted(catalog.engines))}",
        )
    return catalog.engines[engine]


def driver_major_of(driver_version: str) -> int:
    head = driver_version.strip().split(".")[0]
    if not head.isdigit():
        raise InputError(
            f"driver version {driver_version!r} does not start with a number",
            hint="pass the driver_version nvidia-smi reports, for example 570.148.08",
        )
    return int(head)


def driver_cuda(table: Mapping[str, int], driver_version: str) -> str | None:
    """The newest CUDA listed in the catalog whose minimum driver is at most this driver."""
    major = driver_major_of(driver_version)
    supported = [cuda for cuda, needed in table.items() if needed <= major]
    return max(supported, key=cuda_tuple) if supported else None


def _needed_driver(table: Mapping[str, int], cuda: str) -> int | None:
    if cuda in table:
        return table[cuda]
    # A CUDA release the table does not list needs at least what the newest listed release below it needs.
    lower = [c for c in table if cuda_tuple(c) <= cuda_tuple(cuda)]
    return table[max(lower, key=cuda_tuple)] if lower else None


def _host_words(driver_version: str | None) -> str:
    # The renderer knows only the host's CUDA release (option cuda_version), not its driver.
    return f"driver {driver_version}" if driver_version else "the host"


def fit(
    image_cuda: str, host_cuda: str | None, driver_version: str | None, table: Mapping[str, int]
) -> _Fit:
    """Whether an image built for `image_cuda` starts on a host whose driver supports `host_cuda`."""
    needed = _needed_driver(table, image_cuda)
    needed_text = f"driver >= {needed}" if needed else f"a driver that supports CUDA {image_cuda}"
    host = _host_words(driver_version)
    if host_cuda is None:
        return _Fit(
            False,
            False,
            f"{host} is older than every CUDA release the catalog lists; CUDA {image_cuda} "
            f"needs {needed_text}",
        )
    image_version, host_version = cuda_tuple(image_cuda), cuda_tuple(host_cuda)
    if image_version <= host_version:
        return _Fit(True, False, f"{host} supports CUDA {host_cuda} >= the image's {image_cuda}")
    if image_version[0] == host_version[0]:
        return _Fit(
            True,
            True,
            f"{host} supports CUDA {host_cuda}; the image's CUDA {image_cuda} runs "
            f"under CUDA "
            f"minor-version compatibility, so the container gets NVIDIA_DISABLE_REQUIRE=1 (without it: "
            f"`{CONTAINER_CLI_ERROR.format(cuda=image_cuda)}`)",
        )
    return _Fit(
        False,
        False,
        f"CUDA {image_cuda} needs {needed_text}; {host} supports CUDA {host_cuda} only, "
        f"and a new CUDA major release cannot run on an older major's driver: the container would fail "
        f"to start with "
        f"`{CONTAINER_CLI_ERROR.format(cuda=image_cuda)}`",
    )


def cuda_from_tag(image: str) -> str | None:
    """The CUDA release an image tag names.

    `-cu130` -> 13.0, `-cu129` -> 12.9, `-cu12` -> 12 (minor unknown), nvidia/cuda:12.8.1-... -> 12.8.
    """
    reference = image.split("@", 1)[0]
    repository, _, tag = reference.rpartition(":")
    if not repository or "/" in tag:
        return None
    suffix = re.search(r"(?:^|[-_.])cu(\d{2})(\d)?(?:$|[-_.])", tag)
    if suffix:
        major, minor = suffix.group(1), suffix.group(2)
        return f"{major}.{minor}" if minor is not None else major
    if repository.rsplit("/", 1)[-1] == "cuda":
        release = re.match(r"(\d{2})\.(\d+)", tag)
        if release:
            return f"{release.group(1)}.{release.group(2)}"
    return None


_TAG_VERSION = re.compile(r":v?(\d+\.\d+(?:\.\d+)?(?:rc\d+)?)(?:-|$)")


def version_from_tag(image: str) -> str | None:
    """The engine version an image tag names: `vllm/vllm-openai:v0.19.1-cu130` -> 0.19.1."""
    match = _TAG_VERSION.search(image)
    return match.group(1) if match else None


def _find_in_catalog(catalog: Catalog, image: str) -> ImageSpec | None:
    bare = image.split("@", 1)[0]
    for entry in catalog.engines.values():
        for listed in entry.images:
            if listed.image in (image, bare):
                return listed
    return None


def _check_explicit(
    catalog: Catalog,
    engine: str,
    explicit_image: str,
    *,
    driver_version: str | None,
    host_cuda: str | None,
    table: Mapping[str, int],
    vendor: str,
    model: ModelSpec | None,
) -> ImageChoice:
    listed = _find_in_catalog(catalog, explicit_image)
    warnings: list[str] = []
    version = listed.version if listed else None
    bad = known_bad_for(engine_entry(catalog, engine), model, version)
    if bad:
        raise InputError(
            f"image {explicit_image!r} is {engine} {version}, which the catalog marks as known bad: "
            f"{bad.reason}",
            hint=f"pick another image, or leave `image` unset to let glm-deploy choose ({bad.source})",
        )
    if listed is not None and listed.rocm and vendor == "nvidia":
        raise InputError(
            f"image {explicit_image!r} is a ROCm (AMD) build; this host has NVIDIA GPUs",
            hint="use a CUDA image of the engine, or leave `image` unset",
        )
    if listed is not None:
        cuda, known_from = listed.cuda, "the catalog"
    else:
        cuda, known_from = cuda_from_tag(explicit_image), "its tag"
    if vendor != "nvidia":
        return ImageChoice(
            explicit_image,
            cuda,
            f"explicit image {explicit_image!r} (not checked against a CUDA driver on {vendor})",
            engine_version=version,
            rocm=listed.rocm if listed else None,
            spec=listed,
        )
    host = _host_words(driver_version)
    if cuda is None:
        warnings.append(
            f"the CUDA release of image {explicit_image!r} is unknown (not in the catalog, no -cuXYZ tag "
            f"suffix): it cannot be checked against {host} (CUDA {host_cuda}); if the "
            f"container fails with "
            f"`nvidia-container-cli: requirement error`, pick an image built for CUDA {host_cuda} or older"
        )
        return ImageChoice(
            explicit_image,
            None,
            f"explicit image {explicit_image!r}, CUDA unknown",
            warnings=tuple(warnings),
            engine_version=version,
            spec=listed,
        )
    if "." not in cuda:
        # A bare major (`-cu12`) does not say which minor release: only the major can be checked.
        major = int(cuda)
        host_major = cuda_tuple(host_cuda)[0] if host_cuda else -1
        if major > host_major:
            result = fit(f"{major}.0", host_cuda, driver_version, table)
            raise DriverTooOldError(
                f"image {explicit_image!r} is built for CUDA {major} (from {known_from}): "
                f"{result.explanation}",
                hint=_driver_hint(table, f"{major}.0"),
            )
        warnings.append(
            f"image {explicit_image!r} names CUDA {major} without a minor release; if it is newer than the "
            f"{'driver' if driver_version else 'host'}'s CUDA {host_cuda} the container needs "
            "NVIDIA_DISABLE_REQUIRE=1"
        )
        return ImageChoice(
            explicit_image,
            cuda,
            f"explicit image {explicit_image!r} (CUDA {major} from {known_from}; {host} "
            f"supports CUDA {host_cuda})",
            warnings=tuple(warnings),
            engine_version=version,
            spec=listed,
        )
    result = fit(cuda, host_cuda, driver_version, table)
    if not result.usable:
        raise DriverTooOldError(
            f"image {explicit_image!r} is built for CUDA {cuda} (from {known_from}): {result.explanation}",
            hint=_driver_hint(table, cuda),
        )
    return ImageChoice(
        explicit_image,
        cuda,
        f"explicit image {explicit_image!r} (CUDA {cuda} from {known_from}): {result.explanation}",
        env=MINOR_COMPAT_ENV if result.needs_minor_compat else {},
        warnings=tuple(warnings),
        engine_version=version,
        spec=listed,
    )


def _driver_hint(table: Mapping[str, int], cuda: str) -> str:
    needed = _needed_driver(table, cuda)
    branch = (
        f"set gpu_host_driver_branch: '{needed}' (or newer) to install that driver branch, " if needed else ""
    )
    return f"{branch}or leave `image` unset so glm-deploy picks the image built for this driver's CUDA"


def _eligible(image: ImageSpec, *, vendor: str, model: str | None, gpu_arch: str | None) -> bool:
    if vendor == "amd":
        if not image.rocm or (gpu_arch is not None and image.archs and gpu_arch not in image.archs):
            return False
    elif vendor == "cpu":
        if image.cuda or image.rocm:
            return False
    elif not image.cuda:
        return False
    # Images made for particular models (vLLM's glm52 tags) are never picked for other models.
    return not image.models or (model is not None and model in image.models)


def _acceptable(image: ImageSpec, entry: EngineSpec, model: ModelSpec | None) -> bool:
    """Whether an unpinned choice may take this image's release: not below the model's minimum, not bad."""
    if image.version is None:
        return True  # a floating tag has no release to check; its warning asks for a digest
    minimum = model.min_engine_versions.get(entry.name) if model else None
    if minimum is not None and not version_at_least(image.version, minimum):
        return False
    return known_bad_for(entry, model, image.version) is None


def choose_image(
    catalog: Catalog,
    engine: str,
    *,
    driver_version: str | None,
    engine_version: str | None,
    explicit_image: str | None,
    model: str | None = None,
    vendor: str = "nvidia",
    gpu_arch: str | None = None,
    host_cuda: str | None = None,
) -> ImageChoice:
    """Pick the image of `engine` this host can start, or refuse with the reason and what would work.

    driver_version: as nvidia-smi reports it (570.148.08); on AMD hosts the amdgpu version (not compared);
    None when only host_cuda is known (the renderer). host_cuda: the CUDA version nvidia-smi's header
    reports; when None it is derived from the catalog's cuda_driver_minimum table. model: catalog model name,
    so images made for one model (vLLM's glm52 tags) are preferred for it and never picked for others, and an
    unpinned choice skips releases below the model's minimum or marked bad for it.

    Order without an explicit image: the newest engine release that is left, so the engine version does not
    depend on the host; among its images the newest CUDA the driver supports outright, else the oldest one
    that runs under minor-version compatibility; a refusal when none of them fits (rather than quietly
    falling back to an older release).
    """
    entry = engine_entry(catalog, engine)
    model_spec = catalog.models.get(model) if model else None
    table = catalog.cuda_driver_minimum
    if vendor == "nvidia" and host_cuda is None:
        if driver_version is None:
            raise InputError(
                f"cannot choose a {engine} image: neither host_cuda nor driver_version was given",
                hint="pass the driver_version nvidia-smi reports (e.g. 570.148.08) or the host's CUDA (12.8)",
            )
        host_cuda = driver_cuda(table, driver_version)
    bad = known_bad_for(entry, model_spec, engine_version)
    if bad:
        raise InputError(
            f"{engine} {engine_version} is marked known bad in the catalog: {bad.reason}",
            hint=f"use another engine_version ({bad.source})",
        )
    if explicit_image:
        return _check_explicit(
            catalog,
            engine,
            explicit_image,
            driver_version=driver_version,
            host_cuda=host_cuda,
            table=table,
            vendor=vendor,
            model=model_spec,
        )

    candidates = [
        image for image in entry.images if _eligible(image, vendor=vendor, model=model, gpu_arch=gpu_arch)
    ]
    if engine_version is not None:
        candidates = [image for image in candidates if image.version == engine_version]
    else:
        candidates = [image for image in candidates if _acceptable(image, entry, model_spec)]
    if model is not None:
        preferred = [image for image in candidates if image.preferred and model in image.models]
        candidates = preferred or candidates
    if not candidates:
        listed = sorted({f"{image.image} ({engine} {image.version})" for image in entry.images})
        wanted = f"{engine} {engine_version}" if engine_version else engine
        raise NoImageError(
            f"the catalog lists no {vendor} image for {wanted}" + (f" and model {model}" if model else ""),
            hint=("images it lists: " + ", ".join(listed)) if listed else "give an explicit `image`",
        )

    if vendor == "cpu":
        best = max(candidates, key=lambda image: version_order(image.version))
        return ImageChoice(
            best.image,
            None,
            f"CPU image of {engine} {best.version}",
            engine_version=best.version,
            warnings=floating_warning(best),
            spec=best,
        )
    if vendor == "amd":
        best = max(candidates, key=lambda image: version_order(image.version))
        return ImageChoice(
            best.image,
            None,
            f"ROCm {best.rocm} image of {engine} {best.version}" + (f" for {gpu_arch}" if gpu_arch else ""),
            engine_version=best.version,
            rocm=best.rocm,
            warnings=floating_warning(best),
            spec=best,
        )

    newest_version = max(version_order(image.version) for image in candidates)
    same_version = [image for image in candidates if version_order(image.version) == newest_version]
    fits = [(image, fit(str(image.cuda), host_cuda, driver_version, table)) for image in same_version]
    native = [(image, result) for image, result in fits if result.usable and not result.needs_minor_compat]
    compat = [(image, result) for image, result in fits if result.usable and result.needs_minor_compat]
    if native:
        chosen, result = max(native, key=lambda pair: cuda_tuple(str(pair[0].cuda)))
    elif compat:
        # The smallest step past the driver's CUDA: the least that minor-version compatibility must cover.
        chosen, result = min(compat, key=lambda pair: cuda_tuple(str(pair[0].cuda)))
    else:
        refused = "; ".join(f"{image.image}: {result.explanation}" for image, result in fits)
        lowest = min((str(image.cuda) for image in same_version), key=cuda_tuple)
        # Older releases that would start here are named, not taken: the engine version must not change
        # silently with the host's driver.
        older = sorted(
            {
                str(image.version)
                for image in candidates
                if image.version is not None and fit(str(image.cuda), host_cuda, driver_version, table).usable
            },
            key=version_order,
        )
        pin = f"; or pin engine_version {' or '.join(older)}, built for this CUDA too" if older else ""
        raise DriverTooOldError(
            f"no {engine} image for {_host_words(driver_version)} (CUDA {host_cuda}): {refused}",
            hint=_driver_hint(table, lowest) + pin,
        )
    return ImageChoice(
        chosen.image,
        chosen.cuda,
        f"{engine} {chosen.version or '(floating tag)'} built for CUDA {chosen.cuda}: {result.explanation}",
        env=MINOR_COMPAT_ENV if result.needs_minor_compat else {},
        warnings=floating_warning(chosen),
        engine_version=chosen.version,
        spec=chosen,
    )


def floating_warning(image: ImageSpec) -> tuple[str, ...]:
    """The warning a moving tag (`:latest`) gets, whoever picked it."""
    if image.floating:
        return (
            f"image {image.image} is a floating tag: the engine_image role records the pulled image by "
            "digest and redeploys use that digest; pin it yourself (option image=<repo>@sha256:<digest>) "
            "to choose which build runs",
        )
    return ()
