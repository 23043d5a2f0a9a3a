"""A run on two processes (gloo on the CPU) is the run on one process with the same global batch."""

import os
import signal

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from tests.conftest import base_values
from tests.test_training import Recorder
from trainer.data.synthetic import make_dataset
from trainer.job.config import build_config
from trainer.training.ranks import RankLost, train_processes

# float32 on the CPU: the two runs differ only in the order of the gradients' additions (the all-reduce sums two
# halves, one process sums them one after the other), so their numbers agree to rounding
LOSS_TOLERANCE = 1e-4
WEIGHT_TOLERANCE = 1e-4


@pytest.fixture
def four_images(tmp_path):
    data = tmp_path / "data"
    make_dataset(data, count=4, repeats=1)
    return data


def _config(tiny_models, data, out, **extra):
    values = base_values(tiny_models["sd15"], data, out, train_batch_size=1, max_train_epochs=2, learning_rate=2e-3,
                         save_every_n_epochs=1, save_state=True)
    values.update(extra)
    return build_config(values)


def _tensors(path):
    return load_file(str(path))


def _metadata(path):
    with safe_open(str(path), "pt") as handle:
        return handle.metadata()


def test_two_processes_train_as_one_process_with_the_same_global_batch(tiny_models, four_images, tmp_path):
    one = Recorder()
    single = train_processes(_config(tiny_models, four_images, tmp_path / "one", gradient_accumulation_steps=2), one)
    two = Recorder()
    double = train_processes(_config(tiny_models, four_images, tmp_path / "two", gpus=2), two)

    assert [p.step for p in two.progress] == [p.step for p in one.progress] == [1, 2, 3, 4]
    assert [p.total_steps for p in two.progress] == [4] * 4  # 4 batches an epoch, 2 per step
    for a, b in zip(one.progress, two.progress, strict=True):
        assert abs(a.loss - b.loss) <= LOSS_TOLERANCE * max(1.0, abs(a.loss))
    mine, theirs = _tensors(single.final_path), _tensors(double.final_path)
    assert mine.keys() == theirs.keys()
    for key, tensor in mine.items():
        assert (theirs[key].shape, theirs[key].dtype) == (tensor.shape, tensor.dtype)
        assert torch.allclose(theirs[key], tensor, atol=WEIGHT_TOLERANCE, rtol=WEIGHT_TOLERANCE), key
    trained = [key for key in mine if "lora_up" in key]
    assert any(mine[key].abs().max() > 0 for key in trained)  # the runs trained: the compared weights moved
    assert _metadata(double.final_path)["ss_total_batch_size"] == "2"
    assert _metadata(single.final_path)["ss_total_batch_size"] == "2"
    # only rank 0 wrote: one file per epoch, one state
    assert sorted(p.name for p in (tmp_path / "two").glob("*.safetensors")) == ["t-000001.safetensors",
                                                                              "t.safetensors"]
    assert len(two.saved) == 2 and any("on 2 processes" in line for line in two.logs)


def test_a_state_from_two_processes_resumes_on_one(tiny_models, four_images, tmp_path):
    """The position is counted in the epoch's batches, so it means the same on any number of processes; what
    changes is the steps an epoch takes (here 2 steps of 2 batches either way, as accumulation makes up the
    missing process)."""
    whole = train_processes(_config(tiny_models, four_images, tmp_path / "whole", gradient_accumulation_steps=2))
    first = train_processes(_config(tiny_models, four_images, tmp_path / "first", gpus=2, max_train_epochs=1))
    assert first.state_dir is not None
    rest = Recorder()
    resumed = train_processes(_config(tiny_models, four_images, tmp_path / "rest", gradient_accumulation_steps=2,
                                      resume=str(first.state_dir)), rest)
    assert [p.step for p in rest.progress] == [3, 4]
    mine, theirs = _tensors(whole.final_path), _tensors(resumed.final_path)
    for key, tensor in mine.items():
        assert torch.allclose(theirs[key], tensor, atol=WEIGHT_TOLERANCE, rtol=WEIGHT_TOLERANCE), key


class KillsRankOne(Recorder):
    def __init__(self, started):
        super().__init__()
        self.started = started

    def on_progress(self, p):
        super().on_progress(p)
        if p.step == 1:
            os.kill(self.started[0].pid, signal.SIGKILL)
            self.started[0].join(timeout=30)


def test_a_killed_rank_ends_the_attempt_with_the_reason(tiny_models, four_images, tmp_path):
    started = []
    with pytest.raises(RankLost, match="process 1 of 2 ended with exit code -9"):
        train_processes(_config(tiny_models, four_images, tmp_path / "out", gpus=2), KillsRankOne(started),
                        started)
    assert not started[0].is_alive()
    assert not torch.distributed.is_initialized()  # the worker process can train its next job
