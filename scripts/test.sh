#!/usr/bin/env bash
# The test command (README, second command; CI runs it through .ci/run): installs everything into a fresh venv,
# then runs ruff, mypy (strict on src/), yamllint, ansible-lint (production profile), ansible-test sanity and pytest.
# Extra arguments go to pytest, e.g. `scripts/test.sh -m "not sandbox"`.
# `scripts/test.sh --fast` is the fast tier for a developer (about a minute): it reuses the venv when it exists and
# runs ruff, mypy and the unit tests only (`-m unit`: no process, no sandbox; see docs/TESTING.md).
set -euo pipefail
fast=0
if [ "${1:-}" = "--fast" ]; then
  fast=1
  shift
fi
# shellcheck source=scripts/bootstrap.sh
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
cd "$GLM_ROOT"
export PATH="$GLM_VENV/bin:$PATH"
export ANSIBLE_HOME="$GLM_ROOT/.ansible"
python_checks() {
  log "ruff"
  ruff check src tests collection/plugins scripts inventories/sandbox
  log "mypy --strict src/"
  mypy
}
if [ "$fast" = "1" ]; then
  if ! "$GLM_VENV/bin/python" -c "import glm_deploy, pytest" 2>/dev/null; then
    GLM_EXTRAS="dev" install_venv
  fi
  python_checks
  log "pytest, the unit tier"
  exec pytest -q -m unit "$@"
fi
need_root
if [ "${CI:-}" = "true" ] || [ "${GLM_FRESH_VENV:-0}" = "1" ]; then
  rm -rf "$GLM_VENV"
fi
install_system_packages
GLM_EXTRAS="dev,sandbox,plot" install_venv

python_checks
log "yamllint"
yamllint -s .
log "ansible-lint (production profile)"
ansible-lint --profile production
log "ansible-test sanity of the collection (scripts/sanity.sh)"
bash scripts/sanity.sh
log "syntax check of site.yml against both inventories"
ansible-playbook site.yml -i lambda --syntax-check
ansible-playbook site.yml -i sandbox --syntax-check
log "pytest (${GLM_TEST_WORKERS:-2} workers)"
# Two workers: the fleet's chain (deploy, redeploy, Molecule on the same two sandbox hosts) runs on one while the
# other runs every other module, one module at a time per worker (tests/conftest.py groups them).
pytest --durations=25 -n "${GLM_TEST_WORKERS:-2}" --dist loadscope --no-loadscope-reorder "$@"
