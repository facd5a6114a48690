"""Sandbox image builds on one machine: two sandboxes started at once build the image once, and an image built
within the last day is never removed as stale (another sandbox may not have started its hosts on it yet).

The build itself (debootstrap, podman import) is replaced by a stand-in that holds until the test lets it finish,
so the second `ensure_image` is seen waiting while the first builds.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.equipment.processes import start_snippet, wait_for

from glm_deploy.sandbox import image

BUILD = """
import sys, time
from pathlib import Path
from glm_deploy.sandbox import image

work = Path(sys.argv[1])
built = work / "image-exists"

def stand_in_build(key, reference, timings):
    with (work / "builds").open("a") as record:
        record.write(sys.argv[2] + "\\n")
    while not (work / "finish").exists():
        time.sleep(0.05)
    built.touch()
    return reference

image.image_exists = lambda reference: built.exists()
image._build_image = stand_in_build
image.image_reference = lambda key: "localhost/glm-sandbox:test"
print(image.ensure_image(key=None))
"""


@pytest.mark.playbook
def test_a_second_sandbox_waits_for_the_image_build_and_does_not_build_again(tmp_path: Path) -> None:
    builds = tmp_path / "builds"
    first, _ = start_snippet(BUILD, tmp_path, "first")
    try:
        wait_for(builds.exists, "the first sandbox to start building")
        second, second_errors = start_snippet(BUILD, tmp_path, "second")
        try:
            wait_for(lambda: "waiting for another sandbox's image build" in second_errors.read_text(), "the wait")
            (tmp_path / "finish").touch()
            first_out, _ = first.communicate(timeout=60)
            second_out, _ = second.communicate(timeout=60)
        finally:
            second.kill()
    finally:
        first.kill()
    assert first.returncode == 0 and second.returncode == 0, second_errors.read_text()
    assert builds.read_text().split() == ["first"]
    assert first_out.strip() == second_out.strip() == "localhost/glm-sandbox:test"


def test_only_images_older_than_a_day_are_removed_as_stale(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []

    class Listed:
        stdout = "localhost/glm-sandbox:old localhost/glm-sandbox:keep\n"

    def fake_run(argv: list[str], **_: object) -> Listed:
        calls.append(argv)
        return Listed()

    monkeypatch.setattr(image, "run", fake_run)
    image._remove_stale_images(keep="localhost/glm-sandbox:keep")
    listing = calls[0]
    assert listing[:2] == ["podman", "images"] and "until=24h" in listing
    assert calls[1:] == [["podman", "rmi", "localhost/glm-sandbox:old"]]
