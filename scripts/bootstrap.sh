#!/usr/bin/env bash
# Installs what glm-deploy needs on a fresh Debian/Ubuntu machine (as root): system packages and the project's
# venv at ./.venv. Sourced by scripts/sandbox.sh and scripts/test.sh; safe to re-run.
set -euo pipefail

GLM_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
GLM_VENV="${GLM_VENV:-$GLM_ROOT/.venv}"
GLM_EXTRAS="${GLM_EXTRAS:-sandbox}"

# Each step's line says how long the script has run, so a slow step shows in CI's log.
log() { printf '\033[1m==> %s\033[0m (at %d s)\n' "$*" "$SECONDS"; }

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

# What an install of glm-deploy into the venv depends on. The install is editable (hatchling's .pth puts src/ on
# the path), so the contents of src/ are read live and need no reinstall; what a reinstall would change is
# pyproject.toml (dependencies, extras, entry points), the interpreter and which files src/ holds.
install_digest() {
  {
    "$GLM_VENV/bin/python" -VV
    cat "$GLM_ROOT/pyproject.toml"
    (cd "$GLM_ROOT" && find src -type f ! -name '*.pyc' ! -path '*/__pycache__/*' | LC_ALL=C sort)
  } | sha256sum | cut -d' ' -f1
}

# The digest and the extras of the last install, written after it succeeded.
GLM_INSTALL_RECORD_NAME=".glm-deploy-install"

# True when the venv already holds this checkout's glm-deploy with every extra in $GLM_EXTRAS.
install_is_current() {
  local record="$GLM_VENV/$GLM_INSTALL_RECORD_NAME" digest extras wanted
  [ -x "$GLM_VENV/bin/glm-deploy" ] && [ -r "$record" ] || return 1
  { read -r digest && read -r extras; } < "$record" || return 1
  [ "$digest" = "$(install_digest)" ] || return 1
  for wanted in ${GLM_EXTRAS//,/ }; do
    case ",$extras," in *",$wanted,"*) ;; *) return 1 ;; esac
  done
}

install_venv() {
  local python="${GLM_PYTHON:-python3}"
  if [ ! -x "$GLM_VENV/bin/python" ]; then
    log "creating the venv $GLM_VENV"
    "$python" -m venv "$GLM_VENV"
  fi
  if [ "${GLM_REINSTALL:-0}" != "1" ] && install_is_current; then
    log "glm-deploy[$GLM_EXTRAS] in $GLM_VENV is current (pyproject.toml and src/ unchanged; GLM_REINSTALL=1 reinstalls)"
    return 0
  fi
  log "installing glm-deploy[$GLM_EXTRAS] into $GLM_VENV"
  rm -f "$GLM_VENV/$GLM_INSTALL_RECORD_NAME"
  "$GLM_VENV/bin/pip" install -q --upgrade pip >/dev/null
  "$GLM_VENV/bin/pip" install -q -e "$GLM_ROOT[$GLM_EXTRAS]"
  printf '%s\n%s\n' "$(install_digest)" "$GLM_EXTRAS" > "$GLM_VENV/$GLM_INSTALL_RECORD_NAME"
}
