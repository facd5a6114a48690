#!/usr/bin/env bash
# The first command of the README: on a fresh Debian/Ubuntu machine, as root, deploys real vLLM (CPU) serving the
# tiny GLM-family model on a local systemd sandbox host, verifies it and benchmarks it.
#   system packages + venv -> sandbox image and host (+ the local Hub stand-in) -> site.yml -> benchmark
# Re-running it is cheap: every step skips what is already done.
set -euo pipefail
# shellcheck source=scripts/bootstrap.sh
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
need_root
cd "$GLM_ROOT"
install_system_packages
install_venv
export PATH="$GLM_VENV/bin:$PATH"
export ANSIBLE_HOME="$GLM_ROOT/.ansible"

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
log "ansible-playbook site.yml -i sandbox"
timed "site.yml" ansible-playbook site.yml -i sandbox
log "benchmark"
timed "benchmark" ansible-playbook playbooks/benchmark.yml -i sandbox
glm-deploy sandbox status

# What a person needs next: the endpoint, where its key is, a request to paste, and the benchmark's figures.
log "your endpoint"
glm-deploy client-env --for openai --json | "$GLM_VENV/bin/python" scripts/endpoint_summary.py
cat "$GLM_ROOT/.cache/sandbox-timings.txt"
