"""An epoch-based training loop that resumes exactly in the middle of an
epoch.

MMEngine's ``EpochBasedTrainLoop`` restarts the data of an epoch from its
first batch when it resumes from an iteration checkpoint (``CheckpointHook``
with ``by_epoch=False``): the batches seen before the crash are trained on
twice and the run ends with more iterations than planned. Augmentation is
not reproducible either: workers draw random numbers from a stream seeded
once per worker, so crops after a resume differ from those of the run that
was never interrupted.

:class:`ResumableEpochBasedTrainLoop` fixes both:

* the resumed epoch continues at the batch after the checkpoint; the batch
  order is the sampler's for that epoch (mmengine's ``DefaultSampler``
  shuffles with ``seed + epoch``), and skipped batches are never loaded;
* every sample's pipeline runs with Python's, numpy's and torch's (CPU)
  random generators seeded from ``(runner seed, epoch, sample index)``
  (:class:`SeededPipeline`), so its augmentation depends neither on the
  worker that loads it nor on what that worker loaded before. The caller's
  generator states are restored after each sample.

Together with the optimizer, scheduler and message-hub states that MMEngine
checkpoints hold, a resumed run then reproduces the weights of an
uninterrupted one, provided the training step itself draws no random
numbers (true of every cma_ood model: CLIP has no dropout) and the maths is
deterministic (``randomness.deterministic=True`` on GPUs).
"""
import random
from typing import Any, Dict, List, Union

import numpy as np
import torch
from mmengine.logging import print_log
from mmengine.runner import EpochBasedTrainLoop
from mmpretrain.registry import LOOPS
from torch.utils.data import DataLoader


class SeededPipeline:
    """Run ``pipeline`` with random generators seeded per sample.

    The seed of a sample is derived from ``(seed, epoch, results[
    'sample_idx'])`` (``sample_idx`` is set by MMEngine's ``BaseDataset``).
    ``seed`` and ``epoch`` live in shared memory, so :meth:`set_epoch`
    reaches dataloader workers that are already running
    (``persistent_workers=True``).

    Args:
        pipeline (callable): the dataset's pipeline (``Compose``).
        dataset_name (str): named in the error for samples without a
            ``sample_idx``.
    """

    def __init__(self, pipeline, dataset_name: str = 'dataset'):
        self.pipeline = pipeline
        self.dataset_name = dataset_name
        self._state = torch.zeros(2, dtype=torch.int64).share_memory_()

    def set_epoch(self, seed: int, epoch: int) -> None:
        self._state[0] = int(seed) & 0x7FFF_FFFF_FFFF_FFFF
        self._state[1] = int(epoch)

    def sample_seeds(self, sample_idx: int) -> np.ndarray:
        """Four 32-bit seeds of sample ``sample_idx`` at the current epoch."""
        seed, epoch = (int(v) for v in self._state.tolist())
        return np.random.SeedSequence([seed, epoch,
                                       int(sample_idx)]).generate_state(4)

    def __call__(self, results: dict) -> Any:
        if results.get('sample_idx') is None:
            raise KeyError(
                f'SeededPipeline: samples of {self.dataset_name} have no '
                '"sample_idx" to seed their augmentation with; use a '
                'dataset derived from mmengine BaseDataset or set '
                'train_cfg.seed_augmentation=False')
        seeds = self.sample_seeds(results['sample_idx'])
        states = (random.getstate(), np.random.get_state(),
                  torch.default_generator.get_state())
        try:
            random.seed(int(seeds[0]))
            np.random.seed(seeds[1:3])
            torch.default_generator.manual_seed(int(seeds[3]))
            return self.pipeline(results)
        finally:
            random.setstate(states[0])
            np.random.set_state(states[1])
            torch.default_generator.set_state(states[2])

    def __repr__(self) -> str:
        return f'SeededPipeline({self.pipeline!r})'


def leaf_datasets(dataset) -> List[Any]:
    """The datasets with a ``pipeline`` inside dataset wrappers
    (``.dataset`` / ``.datasets``), depth first."""
    if hasattr(dataset, 'pipeline'):
        return [dataset]
    found = []
    inner = getattr(dataset, 'datasets', None)
    if inner is None and getattr(dataset, 'dataset', None) is not None:
        inner = [dataset.dataset]
    for child in inner or []:
        found += leaf_datasets(child)
    return found


def seed_pipelines(dataset) -> List[SeededPipeline]:
    """Wrap the pipeline of every dataset in ``dataset`` (wrappers
    included) in a :class:`SeededPipeline` (once); return the wrappers."""
    wrapped = []
    for leaf in leaf_datasets(dataset):
        if not isinstance(leaf.pipeline, SeededPipeline):
            leaf.pipeline = SeededPipeline(leaf.pipeline,
                                           type(leaf).__name__)
        wrapped.append(leaf.pipeline)
    return wrapped


def remaining_batches_loader(loader: DataLoader, skip: int) -> DataLoader:
    """A one-off loader over the batches of ``loader``'s current epoch after
    the first ``skip``, with the same dataset, workers and collation.

    Only indices are drawn for the skipped batches (nothing is loaded); the
    loader has its own generator, so creating it consumes no number of the
    global torch generator.
    """
    if loader.batch_sampler is None:
        raise ValueError('ResumableEpochBasedTrainLoop needs a dataloader '
                         'with a batch sampler (batch_size set)')
    batches = list(loader.batch_sampler)[skip:]
    kwargs: Dict[str, Any] = {}
    if loader.pin_memory:
        kwargs.update(pin_memory_device=loader.pin_memory_device)
    if loader.num_workers > 0:
        kwargs.update(
            prefetch_factor=loader.prefetch_factor,
            multiprocessing_context=loader.multiprocessing_context)
    return DataLoader(
        loader.dataset,
        batch_sampler=batches,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        timeout=loader.timeout,
        worker_init_fn=loader.worker_init_fn,
        generator=torch.Generator(),
        persistent_workers=False,
        **kwargs)


@LOOPS.register_module()
class ResumableEpochBasedTrainLoop(EpochBasedTrainLoop):
    """``EpochBasedTrainLoop`` that resumes mid-epoch exactly and seeds
    augmentation per sample (see the module documentation).

    Use it with iteration checkpoints to lose at most ``interval``
    iterations when a job is killed::

        train_cfg = dict(type='ResumableEpochBasedTrainLoop', max_epochs=10)
        default_hooks = dict(checkpoint=dict(by_epoch=False, interval=500))

    Args:
        seed_augmentation (bool): wrap the training pipelines in
            :class:`SeededPipeline`. Defaults to True. Without it, a resumed
            run sees the same batches but (with random transforms) other
            augmentations.
        **kwargs: the arguments of ``EpochBasedTrainLoop`` (``max_epochs``,
            ``val_begin``, ``val_interval``, ``dynamic_intervals``).
    """

    def __init__(self,
                 runner,
                 dataloader: Union[DataLoader, Dict],
                 max_epochs: int,
                 seed_augmentation: bool = True,
                 **kwargs) -> None:
        super().__init__(runner, dataloader, max_epochs, **kwargs)
        self.seed_augmentation = seed_augmentation
        self._seeded = (seed_pipelines(self.dataloader.dataset)
                        if seed_augmentation else [])

    def batches_done_in_epoch(self) -> int:
        """Batches of the current epoch trained before a resume (0 unless
        the run resumed from a mid-epoch checkpoint)."""
        per_epoch = len(self.dataloader)
        done = self._iter - self._epoch * per_epoch
        if not 0 <= done <= per_epoch:
            raise RuntimeError(
                f'Cannot resume at iteration {self._iter} of epoch '
                f'{self._epoch + 1}: with {per_epoch} iterations per epoch '
                f'that epoch spans iterations {self._epoch * per_epoch}..'
                f'{(self._epoch + 1) * per_epoch}; the train dataloader '
                '(dataset size, batch size or number of GPUs) changed since '
                'the checkpoint was saved')
        return done

    def run_epoch(self) -> None:
        """Iterate over the batches of one epoch not trained yet."""
        self.runner.call_hook('before_train_epoch')
        self.runner.model.train()
        for pipeline in self._seeded:
            pipeline.set_epoch(self.runner.seed, self._epoch)
        done = self.batches_done_in_epoch()
        if done == 0:
            batches = self.dataloader
        else:
            # MMEngine's "resumed epoch: E, iter: I" counts completed
            # epochs; say both, as the training log numbers epochs from 1
            print_log(
                f'Resumed at iteration {self._iter} after {self._epoch} '
                f'completed epoch(s): continuing with batch {done + 1} of '
                f'{len(self.dataloader)} of epoch {self._epoch + 1} (logged '
                f'as Epoch(train) [{self._epoch + 1}])', logger='current')
            batches = remaining_batches_loader(self.dataloader, done) \
                if done < len(self.dataloader) else []
        for idx, data_batch in enumerate(batches, start=done):
            self.run_iter(idx, data_batch)
        self.runner.call_hook('after_train_epoch')
        self._epoch += 1
