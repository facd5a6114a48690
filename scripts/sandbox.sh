#!/usr/bin/env bash
# The first command of the README: on a fresh Debian/Ubuntu machine, as root, deploys real vLLM (CPU) serving the
# tiny GLM-family model on a local systemd sandbox host, verifies it and benchmarks it.
#   system packages + venv -> sandbox image and host (+ the local Hub stand-in) -> glm-deploy deploy -> benchmark
# The deploy and the benchmark go through glm-deploy (the Python API over site.yml and benchmark.yml), so the
# controller's history records them: `glm-deploy status` and `glm-deploy history` show the release afterwards.
# A second run skips the package install when pyproject.toml and src/ are unchanged (GLM_REINSTALL=1 forces it) and
# the benchmark when the release the host serves was already measured (GLM_BENCHMARK=1 measures again); the
# deploy converges the host again (site.yml, changed=0).
set -euo pipefail
# shellcheck source=scripts/bootstrap.sh
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
need_root
cd "$GLM_ROOT"
install_system_packages
install_venv
export PATH="$GLM_VENV/bin:$PATH"
export ANSIBLE_HOME="$GLM_ROOT/.ansible"
inventory="inventories/sandbox"

timed() {
  local label="$1"; shift
  local started=$SECONDS
  "$@"
  printf '%s took %ss\n' "$label" "$((SECONDS - started))" | tee -a "$GLM_ROOT/.cache/sandbox-timings.txt"
}
mkdir -p "$GLM_ROOT/.cache"
: > "$GLM_ROOT/.cache/sandbox-timings.txt"

log "sandbox host (image, host, Hub stand-in, tiny model, engine wheelhouse)"
timed "sandbox up" glm-deploy sandbox up
log "glm-deploy deploy -i $inventory (site.yml through the Python API; recorded in the history)"
timed "deploy" glm-deploy deploy -i "$inventory"
if [ "${GLM_BENCHMARK:-0}" = "1" ]; then
  log "benchmark (GLM_BENCHMARK=1: measured again)"
  timed "benchmark" glm-deploy benchmark -i "$inventory"
else
  log "benchmark (skipped when this release was already measured; GLM_BENCHMARK=1 measures again)"
  timed "benchmark" glm-deploy benchmark -i "$inventory" --if-new
fi
glm-deploy sandbox status
glm-deploy status -i "$inventory"

# What a person needs next: the endpoint, where its key is, a request to paste, and the benchmark's figures.
log "your endpoint"
glm-deploy client-env --for openai --json | "$GLM_VENV/bin/python" scripts/endpoint_summary.py
cat "$GLM_ROOT/.cache/sandbox-timings.txt"
