"""The sandbox image's tag follows the controller's SSH key; its recipe digest (the engine image's cache key) does
not, so a new clone (a new key) reuses the engine image an earlier clone built."""

from __future__ import annotations

from pathlib import Path

import pytest

from glm_deploy.sandbox import image
from glm_deploy.sandbox.image import SshKey, image_reference, recipe_digest


def _key(folder: Path, text: str) -> SshKey:
    folder.mkdir()
    (folder / "id_ed25519").write_text("private\n")
    (folder / "id_ed25519.pub").write_text(text + "\n")
    return SshKey(folder / "id_ed25519", folder / "id_ed25519.pub")


def test_the_recipe_digest_ignores_the_key_and_follows_everything_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(image, "_ca_certificates", lambda: [])
    one = _key(tmp_path / "one", "ssh-ed25519 AAAAone clone-1")
    two = _key(tmp_path / "two", "ssh-ed25519 AAAAtwo clone-2")
    assert image_reference(one) != image_reference(two)
    first = recipe_digest(one)
    assert first == recipe_digest(two)
    monkeypatch.setattr(image, "PACKAGES", (*image.PACKAGES, "one-more-package"))
    second = recipe_digest(one)
    monkeypatch.setattr(image, "RECIPE_VERSION", image.RECIPE_VERSION + 1)
    third = recipe_digest(one)
    assert len({first, second, third}) == 3
