"""The sandbox host image: Debian 12 with systemd and sshd, reached like a Lambda node (SSH as `ubuntu`,
sudo).

No container registry is reachable from the project's machines, so the image is built locally: debootstrap
writes a minimal Debian root file system, a configuration script runs inside it (chroot), and `podman import`
turns it into an image. Debian 12 (bookworm) because its python3 is 3.11, the Python the engine wheelhouse's
torch is built for.

The image tag is a digest of everything that goes into it (recipe, packages, the controller's SSH public key,
the CA certificates copied in), so it is rebuilt exactly when one of those changes. The root file system is
built in a folder marked as in progress; a folder left over by an interrupted build is deleted and the build
redone. Builds are serialised on the machine (a lock file in the user's cache folder): two sandboxes started at
once with the same key build the image once, the second waits and finds it, and an image another sandbox built
within the last day is never removed as stale before its hosts start.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from glm_deploy.paths import project_root
from glm_deploy.sandbox.environment import STATE_DIR_ENV, SandboxError, exclusive, run, state_dir, timed

IMAGE_LABEL = "io.glm-deploy.sandbox-image"
SUITE = "bookworm"
MIRROR_ENV = "GLM_DEPLOY_DEBIAN_MIRROR"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
SSH_USER = "ubuntu"
HOST_CA_DIR = Path("/usr/local/share/ca-certificates")
# Bumped whenever the configuration below changes what the image contains.
RECIPE_VERSION = 1

PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "sudo",
    "python3",
    "python3-venv",
    "python3-packaging",
    "python3-apt",
    "ca-certificates",
    "iproute2",
    "procps",
    "curl",
)

# Runs inside the new root file system (chroot). Idempotent, so that reading it twice is harmless.
CONFIGURE_SCRIPT = f"""\
set -eu
id -u {SSH_USER} >/dev/null 2>&1 || useradd --create-home --shell /bin/bash {SSH_USER}
install -d -m 0700 -o {SSH_USER} -g {SSH_USER} /home/{SSH_USER}/.ssh
install -m 0600 -o {SSH_USER} -g {SSH_USER} /tmp/glm-sandbox/authorized_keys \\
  /home/{SSH_USER}/.ssh/authorized_keys
printf '%s\\n' '{SSH_USER} ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/90-{SSH_USER}
chmod 0440 /etc/sudoers.d/90-{SSH_USER}
visudo -cf /etc/sudoers.d/90-{SSH_USER}
# The controller's HTTPS may pass an intercepting proxy: trust the same CAs inside the hosts.
if ls /tmp/glm-sandbox/ca/*.crt >/dev/null 2>&1; then
  cp /tmp/glm-sandbox/ca/*.crt /usr/local/share/ca-certificates/
fi
update-ca-certificates >/dev/null
# Key authentication only, and no reverse DNS lookups that stall logins on a network without DNS.
install -d -m 0755 /etc/ssh/sshd_config.d
printf '%s\\n' 'PasswordAuthentication no' 'KbdInteractiveAuthentication no' 'UseDNS no' \\
  > /etc/ssh/sshd_config.d/50-glm-sandbox.conf
# Every host gets its own SSH host keys at first boot, not copies baked into the image.
rm -f /etc/ssh/ssh_host_*
cat > /etc/systemd/system/glm-sandbox-ssh-host-keys.service <<'UNIT'
[Unit]
Description=Generate SSH host keys of a glm-deploy sandbox host
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=multi-user.target
UNIT
ln -sf /etc/systemd/system/glm-sandbox-ssh-host-keys.service \\
  /etc/systemd/system/multi-user.target.wants/glm-sandbox-ssh-host-keys.service
systemctl enable ssh.service >/dev/null 2>&1 || true
# Units that cannot work in a container would leave systemd "degraded".
for unit in systemd-modules-load.service sys-kernel-config.mount getty@tty1.service; do
  ln -sf /dev/null /etc/systemd/system/$unit
done
# A fresh machine id per container, written by systemd at boot.
: > /etc/machine-id
rm -f /var/lib/dbus/machine-id
apt-get clean
rm -rf /tmp/glm-sandbox
"""


@dataclass(frozen=True)
class SshKey:
    private: Path
    public: Path

    def public_text(self) -> str:
        return self.public.read_text().strip()


IMAGE_REPOSITORY = "localhost/glm-sandbox"


def key_dir() -> Path:
    """Where the controller's sandbox SSH key lives.

    Every sandbox name shares one key (and so one image, whose tag digests the key) unless its state folder is
    set explicitly: a second sandbox, such as the test suite's, then needs no image build of its own.
    """
    if os.environ.get(STATE_DIR_ENV):
        return state_dir() / "ssh"
    return project_root() / ".cache" / "sandbox" / "ssh"


def ensure_ssh_key(directory: Path | None = None) -> SshKey:
    """The controller's key for the sandbox hosts (generated once, private half mode 0600)."""
    folder = directory or key_dir()
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    private = folder / "id_ed25519"
    public = folder / "id_ed25519.pub"
    if not (private.is_file() and public.is_file()):
        # Two sandboxes started at once share this key: one generates it, the other waits and uses it.
        with exclusive(folder / ".keygen.lock", "waiting for another sandbox to generate the SSH key ..."):
            if not (private.is_file() and public.is_file()):
                private.unlink(missing_ok=True)
                public.unlink(missing_ok=True)
                run(
                    ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "glm-deploy-sandbox", "-f", str(private)],
                    what="generating the sandbox SSH key",
                )
    private.chmod(0o600)
    return SshKey(private, public)


def _ca_certificates() -> list[Path]:
    if not HOST_CA_DIR.is_dir():
        return []
    return sorted(path for path in HOST_CA_DIR.rglob("*.crt") if path.is_file())


def mirror() -> str:
    return os.environ.get(MIRROR_ENV, DEFAULT_MIRROR)


def image_inputs(key: SshKey) -> dict[str, object]:
    """Everything the image is made of; its digest is the image tag."""
    return {
        "recipe_version": RECIPE_VERSION,
        "suite": SUITE,
        "mirror": mirror(),
        "packages": list(PACKAGES),
        "configure_script": CONFIGURE_SCRIPT,
        "authorized_key": key.public_text(),
        "ca_certificates": {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in _ca_certificates()},
    }


def recipe_digest(key: SshKey) -> str:
    """What the image is made of except the SSH key it authorizes (which differs per controller and per clone).

    The engine image built on top of the sandbox image is cached under this (playbooks/sandbox_engine_image.yml):
    the key is in no file the engine image uses, so a new clone reuses the engine image an earlier one built.
    """
    return _digest({name: value for name, value in image_inputs(key).items() if name != "authorized_key"})


def image_reference(key: SshKey) -> str:
    return f"{IMAGE_REPOSITORY}:{_digest(image_inputs(key))[:16]}"


def _digest(inputs: dict[str, object]) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def image_exists(reference: str) -> bool:
    return run(["podman", "image", "exists", reference], what="podman image exists", check=False).returncode == 0


def _debootstrap(rootfs: Path) -> None:
    run(
        ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, str(rootfs), mirror()],
        what=f"debootstrap {SUITE} into {rootfs}",
        timeout=1800,
    )


def _configure(rootfs: Path, key: SshKey) -> None:
    staging = rootfs / "tmp" / "glm-sandbox"
    (staging / "ca").mkdir(parents=True, exist_ok=True)
    (staging / "authorized_keys").write_text(key.public_text() + "\n")
    for certificate in _ca_certificates():
        shutil.copy2(certificate, staging / "ca" / certificate.name)
    run(
        ["chroot", str(rootfs), "/bin/sh", "-c", CONFIGURE_SCRIPT],
        what="configuring the sandbox image (chroot)",
    )


def _import(rootfs: Path, reference: str) -> None:
    tar = subprocess.Popen(["tar", "--numeric-owner", "--xattrs", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    if tar.stdout is None:
        raise SandboxError("tar produced no output stream")
    imported = subprocess.run(
        [
            "podman",
            "import",
            "--change",
            'CMD ["/sbin/init"]',
            "--change",
            "STOPSIGNAL SIGRTMIN+3",
            "--change",
            f"LABEL {IMAGE_LABEL}={reference.rsplit(':', 1)[1]}",
            "-",
            reference,
        ],
        stdin=tar.stdout,
        capture_output=True,
        text=True,
        check=False,
    )
    tar.stdout.close()
    tar_rc = tar.wait()
    if tar_rc != 0 or imported.returncode != 0:
        if image_exists(reference):
            run(["podman", "rmi", "-f", reference], what="removing a half-imported image", check=False)
        raise SandboxError(
            f"importing the sandbox root file system as {reference} failed (tar exit {tar_rc}, "
            f"podman import exit {imported.returncode}): {imported.stderr.strip()[-1500:]}"
        )


# An image younger than this is never removed as stale: another sandbox (another checkout, another key) may have
# built it a moment ago and not have started its hosts yet.
STALE_AFTER = "24h"


def _build_lock() -> Path:
    """The machine-wide lock file that serialises sandbox image builds."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "glm-deploy" / "sandbox-image.lock"


def _remove_stale_images(keep: str) -> None:
    """Older sandbox images (other inputs) that no container uses any more."""
    listed = run(
        [
            "podman",
            "images",
            "--format",
            "{{.Repository}}:{{.Tag}}",
            "--filter",
            f"reference={IMAGE_REPOSITORY}",
            "--filter",
            f"until={STALE_AFTER}",
        ],
        what="listing sandbox images",
        check=False,
    )
    for reference in listed.stdout.split():
        if reference != keep:
            run(["podman", "rmi", reference], what=f"removing stale image {reference}", check=False)


def ensure_image(key: SshKey, timings: dict[str, float] | None = None, *, force: bool = False) -> str:
    """Build the sandbox image unless an image with the same inputs exists; return its reference."""
    reference = image_reference(key)
    if not force and image_exists(reference):
        return reference
    with exclusive(_build_lock(), "waiting for another sandbox's image build to finish ..."):
        if not force and image_exists(reference):
            return reference  # built by the sandbox that held the lock
        return _build_image(key, reference, timings)


def _build_image(key: SshKey, reference: str, timings: dict[str, float] | None) -> str:
    build_root = state_dir() / "image-build"
    rootfs = build_root / reference.rsplit(":", 1)[1]
    marker = build_root / f"{rootfs.name}.in-progress"
    if rootfs.exists() or marker.exists():
        # Left by an interrupted build: debootstrap cannot resume into a half-written root.
        shutil.rmtree(rootfs, ignore_errors=True)
        marker.unlink(missing_ok=True)
    build_root.mkdir(parents=True, exist_ok=True)
    marker.write_text("a sandbox image build started here and has not finished\n")
    try:
        with timed(f"building sandbox image {reference} (debootstrap {SUITE}, 1-2 min)", timings, "image_build"):
            _debootstrap(rootfs)
            _configure(rootfs, key)
            _import(rootfs, reference)
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)
        marker.unlink(missing_ok=True)
    _remove_stale_images(keep=reference)
    return reference
