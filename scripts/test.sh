#!/usr/bin/env bash
# The test command (README, second command; CI runs it through .ci/run): installs everything into a fresh venv,
# then runs ruff, mypy (strict on src/), yamllint, ansible-lint (production profile) and pytest.
# Extra arguments go to pytest, e.g. `scripts/test.sh -m "not sandbox"`.
set -euo pipefail
# shellcheck source=scripts/bootstrap.sh
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
need_root
cd "$GLM_ROOT"
if [ "${CI:-}" = "true" ] || [ "${GLM_FRESH_VENV:-0}" = "1" ]; then
  rm -rf "$GLM_VENV"
fi
install_system_packages
GLM_EXTRAS="dev,sandbox,plot" install_venv
export PATH="$GLM_VENV/bin:$PATH"
export ANSIBLE_HOME="$GLM_ROOT/.ansible"

log "ruff"
ruff check src tests collection/plugins scripts inventories/sandbox
log "mypy --strict src/"
mypy
log "yamllint"
yamllint -s .
log "ansible-lint (production profile)"
ansible-lint --profile production
log "syntax check of site.yml against both inventories"
ansible-playbook site.yml -i lambda --syntax-check
ansible-playbook site.yml -i sandbox --syntax-check
log "pytest"
pytest --durations=25 "$@"
