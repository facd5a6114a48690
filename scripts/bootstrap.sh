#!/usr/bin/env bash
# Installs what glm-deploy needs on a fresh Debian/Ubuntu machine (as root): system packages and the project's
# venv at ./.venv. Sourced by scripts/sandbox.sh and scripts/test.sh; safe to re-run.
set -euo pipefail

GLM_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
GLM_VENV="${GLM_VENV:-$GLM_ROOT/.venv}"
GLM_EXTRAS="${GLM_EXTRAS:-sandbox}"

log() { printf '\033[1m==> %s\033[0m\n' "$*"; }

need_root() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "glm-deploy set-up installs system packages (podman, runc, debootstrap, python3-venv) and starts" >&2
    echo "privileged containers: run it as root (sudo $0)." >&2
    exit 1
  fi
}

install_system_packages() {
  local wanted=(python3 python3-venv python3-dev gcc git openssh-client podman runc debootstrap curl ca-certificates rsync)
  local missing=()
  for package in "${wanted[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    log "installing system packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

install_venv() {
  local python="${GLM_PYTHON:-python3}"
  if [ ! -x "$GLM_VENV/bin/python" ]; then
    log "creating the venv $GLM_VENV"
    "$python" -m venv "$GLM_VENV"
  fi
  log "installing glm-deploy[$GLM_EXTRAS] into $GLM_VENV"
  "$GLM_VENV/bin/pip" install -q --upgrade pip >/dev/null
  "$GLM_VENV/bin/pip" install -q -e "$GLM_ROOT[$GLM_EXTRAS]"
}
