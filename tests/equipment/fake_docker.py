"""A stand-in for the `docker` CLI, enough for the engine_image role: image inspect, pull, run, build.

This machine has no Docker engine and no registry, so the role's probe -> compare -> act logic is exercised
against this double. Its state lives in a folder (FAKE_DOCKER_STATE):
- registry.json: images that `pull` can fetch, {reference: {"digest": "sha256:...", "env": {...}}}; "env" is
  the environment the image's processes get (PATH, CUDA_HOME, CPATH), standing for what the image holds;
- images.json: pulled and built images, written by this script;
- calls.log: one line per command, so tests can count pulls and builds.
`run ... --entrypoint python3 IMAGE - ARGS` runs this machine's Python with the image's environment and stdin;
`build` reads the Containerfile (FROM, LABEL, ENV, RUN) and runs its last RUN (the in-image check) the same
way, failing the build when it fails, as a real build would.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

STATE = Path(os.environ["FAKE_DOCKER_STATE"])


def load(name: str) -> dict:
    path = STATE / name
    return json.loads(path.read_text()) if path.exists() else {}


def save(name: str, data: dict) -> None:
    (STATE / name).write_text(json.dumps(data, indent=1))


def find(images: dict, reference: str) -> dict | None:
    for image in images.values():
        if reference in image["references"]:
            return image
    return None


def inspect(args: list[str]) -> int:
    fmt = args[args.index("--format") + 1]
    image = find(load("images.json"), args[-1])
    if image is None:
        print(f"Error: No such image: {args[-1]}", file=sys.stderr)
        return 1
    if "RepoDigests" in fmt:
        print(json.dumps(image["repo_digests"]))
    elif ".Id" in fmt:
        print(image["id"])
    elif "org.glm-deploy.inputs" in fmt:
        print(image["labels"].get("org.glm-deploy.inputs", ""))
    else:
        print(f"fake docker: unsupported format {fmt}", file=sys.stderr)
        return 2
    return 0


def pull(reference: str) -> int:
    entry = load("registry.json").get(reference)
    if entry is None:
        print(f"Error response from daemon: manifest for {reference} not found", file=sys.stderr)
        return 1
    images = load("images.json")
    repository = reference.rsplit(":", 1)[0]
    by_digest = f"{repository}@{entry['digest']}"
    images[entry["digest"]] = {
        "id": "sha256:" + hashlib.sha256(by_digest.encode()).hexdigest(),
        "references": [reference, by_digest],
        "repo_digests": [by_digest],
        "env": entry["env"],
        "labels": {},
    }
    save("images.json", images)
    return 0


def run_python(image: dict, args: list[str], stdin: str | None) -> int:
    env = {"HOME": os.environ.get("HOME", "/root"), **image["env"]}
    completed = subprocess.run([sys.executable, *args], input=stdin, text=True, env=env, check=False)
    return completed.returncode


def run(args: list[str]) -> int:
    entrypoint = args[args.index("--entrypoint") + 1]
    rest = args[args.index("--entrypoint") + 2 :]
    image = find(load("images.json"), rest[0])
    if image is None or entrypoint != "python3":
        print(f"fake docker: cannot run {rest[0]} with entrypoint {entrypoint}", file=sys.stderr)
        return 125
    return run_python(image, rest[1:], sys.stdin.read() if "--interactive" in args else None)


def build(args: list[str]) -> int:
    containerfile = Path(args[args.index("--file") + 1])
    tag = args[args.index("--tag") + 1]
    context = Path(args[-1])
    text = containerfile.read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    images = load("images.json")
    base = find(images, lines[0].split(None, 1)[1])
    if not lines[0].startswith("FROM ") or base is None:
        print(f"fake docker: base of {containerfile} not present: {lines[0]}", file=sys.stderr)
        return 1
    env = dict(base["env"])
    labels: dict[str, str] = {}
    for line in lines[1:]:
        keyword, _, rest = line.partition(" ")
        if keyword in ("ENV", "LABEL"):
            target = env if keyword == "ENV" else labels
            for word in shlex.split(rest):
                key, _, value = word.partition("=")
                target[key] = value
    check = lines[-1]
    match = re.match(r"RUN python3 /opt/glm-deploy/check_engine_image.py (.*)", check)
    if not match:
        print(f"fake docker: the last step is not the in-image check: {check}", file=sys.stderr)
        return 1
    script = (context / "check_engine_image.py").read_text()
    if run_python({"env": env}, ["-", *shlex.split(match.group(1))], script) != 0:
        print("fake docker: the in-image check failed: build aborted", file=sys.stderr)
        return 1
    digest = "sha256:" + hashlib.sha256(text.encode()).hexdigest()
    images[digest] = {"id": digest, "references": [tag], "repo_digests": [], "env": env, "labels": labels}
    save("images.json", images)
    return 0


def main() -> int:
    args = sys.argv[1:]
    with (STATE / "calls.log").open("a") as log:
        log.write(" ".join(args[:2]) + "\n")
    if args[:2] == ["image", "inspect"]:
        return inspect(args)
    if args[0] == "pull":
        return pull(args[1])
    if args[0] == "run":
        return run(args)
    if args[0] == "build":
        return build(args)
    print(f"fake docker: unsupported command {args}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
