#!/usr/bin/env bash
# The test command (README, second command; CI runs it through .ci/run): installs everything into a fresh venv,
# then runs ruff and mypy (strict on src/), then pytest with yamllint, ansible-lint (production profile), ansible-test
# sanity and the syntax checks beside it.
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
# The slower linters run beside pytest (its sandbox steps wait on hosts as much as on the CPU): their output is
# kept in a file and printed after pytest's, and either failing fails the run.
lints() {
  log "yamllint"
  yamllint -s .
  log "ansible-lint (production profile)"
  ansible-lint --profile production
  log "ansible-test sanity of the collection (scripts/sanity.sh)"
  bash scripts/sanity.sh
  log "syntax check of site.yml against both inventories"
  ansible-playbook site.yml -i lambda --syntax-check
  ansible-playbook site.yml -i sandbox --syntax-check
  log "lints done"
}
lint_log="$(mktemp)"
trap 'rm -f "$lint_log"' EXIT
log "yamllint, ansible-lint, ansible-test sanity and the syntax check, beside pytest (their output follows it)"
(set -euo pipefail; lints) >"$lint_log" 2>&1 &
lint_pid=$!
log "pytest (${GLM_TEST_WORKERS:-2} workers)"
# Two workers: the fleet's chain (deploy, redeploy, Molecule on the same two sandbox hosts) runs on one while the
# other runs every other module, one module at a time per worker (tests/conftest.py groups them).
pytest_status=0
pytest --durations=25 -n "${GLM_TEST_WORKERS:-2}" --dist loadscope --no-loadscope-reorder "$@" || pytest_status=$?
lint_status=0
wait "$lint_pid" || lint_status=$?
cat "$lint_log"
if [ "$lint_status" -ne 0 ]; then
  log "the linters failed (exit status $lint_status): see above"
fi
if [ "$pytest_status" -ne 0 ]; then
  log "pytest failed (exit status $pytest_status)"
fi
if [ "$lint_status" -ne 0 ] || [ "$pytest_status" -ne 0 ]; then
  exit 1
fi
log "all checks passed"
