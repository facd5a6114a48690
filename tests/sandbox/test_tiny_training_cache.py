"""Two builds of the tiny model at once train it once: the second waits on the cache entry's lock, then loads.

Training itself is replaced by a stand-in that holds until the test lets it finish, so the second build is seen
waiting while the first trains (two sandboxes started together, or the test tiers side by side, would otherwise
train twice on the same cores).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.equipment.processes import start_snippet, wait_for

pytest.importorskip("torch", reason="the sandbox extra (torch) builds the tiny model")

pytestmark = pytest.mark.playbook

BUILD = """
import sys, time
from pathlib import Path
import torch
from glm_deploy.sandbox import tiny_training

work, value = Path(sys.argv[1]), float(sys.argv[3])

def stand_in_training(model, tokenizer, progress=False):
    with (work / "trainings").open("a") as record:
        record.write(f"{value}\\n")
    while not (work / "finish").exists():
        time.sleep(0.05)
    with torch.no_grad():
        model.weight.fill_(value)
    return 1

tiny_training.train_addition = stand_in_training
model = torch.nn.Linear(2, 2, bias=False)
tiny_training._load_or_train(model, None, [], torch)
print(float(model.weight[0, 0]))
"""


def test_a_second_build_waits_for_the_first_training_and_loads_its_weights(tmp_path: Path) -> None:
    trainings = tmp_path / "trainings"
    first, _ = start_snippet(BUILD, tmp_path, "first", "1.5")
    try:
        wait_for(trainings.exists, "the first build to start training")
        second, second_errors = start_snippet(BUILD, tmp_path, "second", "2.5")
        try:
            wait_for(lambda: "waiting for the build" in second_errors.read_text(), "the second build to wait")
            (tmp_path / "finish").touch()
            first_out, _ = first.communicate(timeout=120)
            second_out, _ = second.communicate(timeout=120)
        finally:
            second.kill()
    finally:
        first.kill()
    assert first.returncode == 0 and second.returncode == 0, second_errors.read_text()
    # One training, and the second build has the first one's weights, read from the cache.
    assert trainings.read_text().split() == ["1.5"]
    assert float(first_out.strip()) == float(second_out.strip()) == 1.5
    cached = list((tmp_path / "cache" / "glm-deploy" / "tiny-model").glob("trained-*.safetensors"))
    assert len(cached) == 1
