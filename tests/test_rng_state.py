"""Where ``mmparax.RNGStateHook`` saves and restores the random states, on a
toy model whose data pipeline (``num_workers=0``) and forward both draw from
the global generators: after mmengine's data-loader fast-forward on resume,
never for ``load_from``, and the training stream's states in checkpoints
saved during or after a validation."""
import itertools

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.evaluator import BaseMetric, Evaluator
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.runner import CheckpointLoader
from torch.utils.data import Dataset

from mmparax.apis import runtime, trusted_loading
from mmparax.apis.runner import PEFTRunner

_names = itertools.count()


class RandomData(Dataset):
    """Every item is drawn from the global torch generator, as random
    augmentations are in the main process."""

    def __init__(self, length):
        self.length = length

    def __len__(self):
        return self.length

    def __getitem__(self, index):
        return dict(inputs=torch.rand(2))


class NoisyModel(BaseModel):
    """A linear layer whose training loss adds noise (a stochastic layer)."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 1)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        out = self.linear(inputs)
        if mode == 'loss':
            out = out + 0.1 * torch.rand_like(out)
            return dict(loss=out.pow(2).mean())
        return list(out)


class MeanOutput(BaseMetric):

    def process(self, data_batch, data_samples):
        self.results.extend(float(x) for x in data_samples)

    def compute_metrics(self, results):
        return dict(score=sum(results) / len(results))


class FirstIterState(Hook):
    """The torch RNG state when the first iteration of the run starts."""

    def __init__(self):
        self.state = None

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if self.state is None:
            self.state = torch.get_rng_state()


@pytest.fixture
def trust(tmp_path, monkeypatch):
    monkeypatch.setattr(trusted_loading, '_trusted', [])
    monkeypatch.setattr(CheckpointLoader, '_schemes',
                        dict(CheckpointLoader._schemes))


def loader(dataset, batch_size, shuffle):
    """Data loaded in the main process (``num_workers=0``)."""
    return dict(
        dataset=dataset,
        sampler=dict(type='DefaultSampler', shuffle=shuffle),
        collate_fn=dict(type='default_collate'),
        batch_size=batch_size,
        num_workers=0)


def toy_runner(work_dir, max_iters, *, interval=2, validate=False,
               val_interval=1, resume=False, load_from=None, hooks=()):
    cfg = Config(dict(custom_hooks=[]))
    runtime.setup_checkpoint_trust(cfg)
    val = dict(
        val_dataloader=loader(RandomData(4), 2, shuffle=False),
        val_evaluator=Evaluator([MeanOutput()]),
        val_cfg=dict()) if validate else {}
    checkpoint = dict(
        type='mmparax.CheckpointHook', interval=interval, by_epoch=False)
    if validate:
        checkpoint.update(save_best='score', rule='greater')
    torch.manual_seed(0)  # the same initial weights in every run
    model = NoisyModel()
    return PEFTRunner(
        model=model,
        work_dir=str(work_dir),
        train_dataloader=loader(RandomData(64), 4, shuffle=True),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
        train_cfg=dict(
            by_epoch=False, max_iters=max_iters, val_interval=val_interval),
        default_hooks=dict(
            checkpoint=checkpoint,
            rng_state=dict(type='mmparax.RNGStateHook'),
            logger=dict(type='LoggerHook', interval=1)),
        custom_hooks=cfg.custom_hooks + list(hooks),
        randomness=dict(seed=0),
        resume=resume,
        load_from=load_from,
        experiment_name=f'rng_toy_{next(_names)}',
        **val)


def test_states_are_restored_after_the_fast_forward(trust, tmp_path):
    straight = toy_runner(tmp_path / 'straight', 4)
    straight.train()
    toy_runner(tmp_path / 'resumed', 2).train()
    resumed = toy_runner(tmp_path / 'resumed', 4, resume=True)
    resumed.train()
    assert resumed.iter == 4
    # the skipped batches drew numbers: restored before them, or not at
    # all, the first new batch and the noise would differ
    assert torch.equal(resumed.model.linear.weight,
                       straight.model.linear.weight)
    assert torch.equal(resumed.model.linear.bias, straight.model.linear.bias)


def test_load_from_keeps_the_fresh_streams(trust, tmp_path):
    toy_runner(tmp_path / 'first', 2).train()
    checkpoint = tmp_path / 'first' / 'iter_2.pth'
    fresh, loaded = FirstIterState(), FirstIterState()
    toy_runner(tmp_path / 'fresh', 1, hooks=[fresh]).train()
    toy_runner(
        tmp_path / 'loaded', 1, load_from=str(checkpoint),
        hooks=[loaded]).train()
    assert torch.equal(loaded.state, fresh.state)
    saved = trusted_loading.load_from_safe(str(checkpoint), 'cpu')
    assert not torch.equal(saved['rng_states'][0]['torch'], fresh.state)


def test_checkpoints_hold_the_training_stream(trust, tmp_path):
    # validation (drawing random data) after every iteration, a best
    # checkpoint and a re-saved iter_N during it, iter_2 right after the
    # validation of iteration 1
    toy_runner(tmp_path / 'val', 2, interval=1, validate=True).train()
    toy_runner(tmp_path / 'no_val', 2, interval=1).train()

    def states(path):
        ckpt = trusted_loading.load_from_safe(str(path), 'cpu')
        return ckpt['meta']['iter'], ckpt['rng_states'][0]['torch']

    expected = dict(
        states(tmp_path / 'no_val' / f'iter_{i}.pth') for i in (1, 2))
    saved = sorted((tmp_path / 'val').glob('*.pth'))
    assert [p.name for p in saved if p.name.startswith('best_')]
    for path in saved:
        step, state = states(path)
        assert torch.equal(state, expected[step]), path.name
