"""Inside an engine image: can it load the model, and can DeepGEMM's JIT compile? Prints one JSON object.

Run with the image's own python3 (standard library + the image's transformers). Two questions:
- transformers: at least the model's minimum version, knows the model type (config.json's `model_type`)
  and, with --import-class, can import the architecture class (this imports torch, as the engine will);
- DeepGEMM (--deepgemm): its JIT compiles FP8 kernels at run time, so the image needs nvcc, cuobjdump, CUTLASS
  >= 4 headers and CPATH naming the CUDA include folder.
With --strict the exit status is 1 when anything is missing (used as a RUN step, so a bad build fails).
"""

import argparse
import importlib
import importlib.util
import json
import os
import re
import shutil
import sys

CUTLASS_MIN_MAJOR = 4


def version_tuple(text):
    return tuple(
        int(part) for part in re.findall(r"\d+", text.split("+")[0].split("rc")[0].split("dev")[0])[:3]
    )


def check_transformers(minimum, model_type, architecture, import_class):
    answer = {"version": None, "ok": False, "problems": []}
    try:
        transformers = importlib.import_module("transformers")
    except Exception as error:  # any import failure means the engine cannot load the model either
        answer["problems"].append(f"transformers cannot be imported: {error}")
        return answer
    answer["version"] = transformers.__version__
    if minimum and version_tuple(transformers.__version__) < version_tuple(minimum):
        answer["problems"].append(
            f"transformers {transformers.__version__} is older than the model's minimum {minimum}"
        )
    if model_type:
        try:
            names = importlib.import_module(
                "transformers.models.auto.configuration_auto"
            ).CONFIG_MAPPING_NAMES
        except Exception as error:
            names = {}
            answer["problems"].append(f"transformers' model registry cannot be read: {error}")
        if names and model_type not in names:
            answer["problems"].append(
                f"transformers {transformers.__version__} does not know model_type {model_type!r} "
                f"(the engine fails with KeyError: {model_type!r})"
            )
    if architecture and import_class:
        try:
            getattr(transformers, architecture)
        except Exception as error:
            answer["problems"].append(
                f"transformers {transformers.__version__} cannot provide {architecture}: {error}"
            )
    answer["ok"] = not answer["problems"]
    return answer


def find_tool(name, cuda_homes):
    found = shutil.which(name)
    if found:
        return found
    for home in cuda_homes:
        candidate = os.path.join(home, "bin", name)
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def include_dirs(cuda_homes):
    dirs = []
    for variable in ("CPATH", "CPLUS_INCLUDE_PATH", "C_INCLUDE_PATH"):
        dirs += [entry for entry in os.environ.get(variable, "").split(os.pathsep) if entry]
    dirs += [os.path.join(home, "include") for home in cuda_homes]
    for module in ("deep_gemm", "cutlass_library", "cutlass"):
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            spec = None
        if spec and spec.submodule_search_locations:
            for location in spec.submodule_search_locations:
                dirs += [os.path.join(location, "include"), os.path.join(location, "source", "include")]
    dirs += ["/usr/local/include", "/usr/include"]
    return dirs


def cutlass_version(include_dir):
    path = os.path.join(include_dir, "cutlass", "version.h")
    try:
        with open(path) as handle:
            text = handle.read()
    except OSError:
        return None
    parts = [re.search(rf"#define\s+CUTLASS_{key}\s+(\d+)", text) for key in ("MAJOR", "MINOR", "PATCH")]
    return tuple(int(part.group(1)) if part else 0 for part in parts)


def check_deepgemm():
    cuda_homes = [
        home for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda") if home
    ]
    answer = {"ok": False, "problems": [], "missing_tools": False}
    nvcc = find_tool("nvcc", cuda_homes)
    answer["nvcc"] = nvcc
    answer["cuobjdump"] = find_tool("cuobjdump", cuda_homes)
    answer["cuda_home"] = os.path.dirname(os.path.dirname(nvcc)) if nvcc else None
    for tool in ("nvcc", "cuobjdump"):
        if not answer[tool]:
            answer["missing_tools"] = True
            answer["problems"].append(
                "{} is not in the image (looked on PATH and in {}): DeepGEMM's JIT cannot build FP8 "
                "kernels".format(tool, ", ".join(os.path.join(home, "bin") for home in cuda_homes))
            )
        elif not shutil.which(tool):
            answer["problems"].append(f"{tool} is at {answer[tool]} but not on PATH")
    homes = [answer["cuda_home"], *cuda_homes] if answer["cuda_home"] else cuda_homes
    found = None
    for directory in include_dirs(homes):
        version = cutlass_version(directory)
        if version is not None:
            found = (directory, version)
            break
    if found is None:
        answer["missing_tools"] = True
        answer["problems"].append(
            "no CUTLASS headers (cutlass/version.h) on CPATH, in the CUDA include folder "
            "or in the deep_gemm package"
        )
    else:
        answer["cutlass_include"], answer["cutlass_version"] = found[0], ".".join(map(str, found[1]))
        if found[1][0] < CUTLASS_MIN_MAJOR:
            answer["missing_tools"] = True
            answer["problems"].append(
                f"CUTLASS {answer['cutlass_version']} at {found[0]} is older than {CUTLASS_MIN_MAJOR}.0"
            )
    cpath = [entry for entry in os.environ.get("CPATH", "").split(os.pathsep) if entry]
    answer["cpath"] = cpath
    if not any(os.path.exists(os.path.join(entry, "cuda_runtime.h")) for entry in cpath):
        answer["problems"].append(
            "CPATH ({}) names no folder with cuda_runtime.h: set CPATH={}/include".format(
                os.environ.get("CPATH", "unset"), answer["cuda_home"] or "/usr/local/cuda"
            )
        )
    answer["ok"] = not answer["problems"]
    return answer


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transformers-minimum", default="")
    parser.add_argument("--model-type", default="")
    parser.add_argument("--architecture", default="")
    parser.add_argument("--import-class", action="store_true")
    parser.add_argument("--deepgemm", action="store_true")
    parser.add_argument("--strict", action="store_true")
    args = parser.parse_args()
    wants_transformers = args.transformers_minimum or args.model_type or args.architecture
    report = {
        "transformers": check_transformers(
            args.transformers_minimum, args.model_type, args.architecture, args.import_class
        )
        if wants_transformers
        else {"ok": True, "checked": False, "problems": []},
        "deepgemm": check_deepgemm() if args.deepgemm else {"ok": True, "checked": False, "problems": []},
    }
    report["problems"] = report["transformers"]["problems"] + report["deepgemm"]["problems"]
    report["ok"] = not report["problems"]
    print(json.dumps(report))
    return 1 if args.strict and not report["ok"] else 0


if __name__ == "__main__":
    sys.exit(main())
