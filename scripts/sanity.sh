#!/usr/bin/env bash
# `ansible-test sanity` for the glm.deploy collection, without Docker, from the project's venv.
#
# ansible-test only tests a collection that sits at .../ansible_collections/<namespace>/<name>, and writes its
# results into the collection's tests/output, so this copies the collection's files (those git tracks or would
# track: the working tree, less ignored files such as __pycache__) into a temporary ansible_collections/glm/deploy
# tree and runs there. The working tree is not touched.
#
# Every sanity test of ansible-test runs; none needs Docker here:
# - pslint and shellcheck find nothing to check (the collection has no PowerShell or shell files); a .ps1 or .sh
#   file would need pwsh or shellcheck on PATH;
# - compile and import, which ansible-test runs once per Python version, run for the venv's Python only: other
#   versions need their interpreters (ansible-test's Docker images have them).
# tests/sanity/ignore-<ansible-core major.minor>.txt lists what is accepted as it is (the collection is Apache-2.0,
# not GPLv3); a new ansible-core needs its own copy of that file.
#
# Each sanity test with requirements (pylint, validate-modules, yamllint, ...) gets a virtual environment, built
# once from the package index and kept by ansible-test under ~/.ansible/test/venv (a first run takes a few minutes
# more). ansible-test seeds those environments with a pip bootstrap script it downloads from
# ci-files.testing.ansible.com into ~/.ansible/test/cache; that host is not reachable from every machine, so when
# the script is not there yet this writes a small stand-in: it installs the Python's own bundled pip (ensurepip),
# then what ansible-test asks for (its pinned pip) from the package index.
#
# Extra arguments go to ansible-test, e.g. `scripts/sanity.sh --test pylint` or `scripts/sanity.sh -v`.
set -euo pipefail

GLM_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
GLM_VENV="${GLM_VENV:-$GLM_ROOT/.venv}"
python="$GLM_VENV/bin/python"
export PATH="$GLM_VENV/bin:$PATH"

python_version="$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
core_version="$("$python" -c 'from ansible.release import __version__; print(".".join(__version__.split(".")[:2]))')"
if [ ! -f "$GLM_ROOT/collection/tests/sanity/ignore-$core_version.txt" ]; then
  echo "collection/tests/sanity/ has no ignore-$core_version.txt for ansible-core $core_version: copy the newest" >&2
  echo "ignore-X.Y.txt there to that name (and check that each entry still applies)." >&2
  exit 2
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
collection="$work/ansible_collections/glm/deploy"
mkdir -p "$collection"
while IFS= read -r -d '' path; do
  # a tracked file deleted in the working tree is left out, as from a commit of the working tree
  [ -e "$GLM_ROOT/collection/$path" ] || continue
  mkdir -p "$collection/$(dirname "$path")"
  cp -p "$GLM_ROOT/collection/$path" "$collection/$path"
done < <(cd "$GLM_ROOT/collection" && git ls-files -z --cached --others --exclude-standard .)

pip_version="$("$python" - <<'EOF'
from types import SimpleNamespace

from ansible_test._internal.python_requirements import get_venv_packages

print(get_venv_packages(SimpleNamespace(version="3"))["pip"])
EOF
)"
get_pip="$HOME/.ansible/test/cache/get_pip_${pip_version//./_}.py"
if [ ! -f "$get_pip" ]; then
  mkdir -p "$(dirname "$get_pip")"
  cat >"$get_pip" <<'EOF'
# Stand-in for ansible-test's get-pip bootstrap (written by glm-deploy's scripts/sanity.sh): installs this
# Python's bundled pip, then the packages ansible-test names (its pinned pip) from the package index.
import subprocess
import sys

# In a process of its own: ensurepip sets PIP_CONFIG_FILE=/dev/null in its process, which would hide the
# machine's pip configuration (index, certificates) from the install below.
subprocess.run([sys.executable, "-m", "ensurepip"], check=True)
arguments = [word for word in sys.argv[1:] if word not in ("--no-setuptools", "--no-wheel")]
subprocess.run([sys.executable, "-m", "pip", "install", *arguments], check=True)
EOF
fi

cd "$collection"
ansible-test sanity --local --python "$python_version" --color no "$@"
