"""Can the venv's transformers load this model? Prints one JSON object; run with the venv's python.

Two questions, both needed: is transformers at least the version the model's card names, and does it provide the
model's architecture class (a class missing from the installed release is the usual failure after a new model
family ships). The class is imported for real, so a broken torch extension (the torchvision fault) shows up here too.
"""

import argparse
import importlib
import json
import sys


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minimum", default="")
    parser.add_argument("--architecture", default="")
    args = parser.parse_args()
    answer = {"ok": False, "version": None, "reason": ""}
    try:
        import transformers  # noqa: PLC0415 - whether it imports is part of the answer
        from packaging.version import Version  # noqa: PLC0415
    except Exception as error:  # any import failure means "not usable", reported as such
        answer["reason"] = f"transformers cannot be imported: {error}"
        print(json.dumps(answer))
        return 0
    answer["version"] = transformers.__version__
    if args.minimum and Version(transformers.__version__) < Version(args.minimum):
        answer["reason"] = f"transformers {transformers.__version__} is older than the model's minimum {args.minimum}"
        print(json.dumps(answer))
        return 0
    if args.architecture:
        try:
            getattr(importlib.import_module("transformers"), args.architecture)
        except Exception as error:  # AttributeError (unknown class) or an import error inside the model code
            answer["reason"] = f"transformers {transformers.__version__} cannot provide {args.architecture}: {error}"
            print(json.dumps(answer))
            return 0
    answer["ok"] = True
    answer["reason"] = (
        f"transformers {transformers.__version__} meets {args.minimum or 'any version'}"
        f" and provides {args.architecture or 'the model'}"
    )
    print(json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main())
