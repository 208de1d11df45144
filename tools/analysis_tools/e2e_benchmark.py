"""End-to-end throughput of tools/test.py and tools/train.py on JPEG files.

The ``e2e-test`` and ``e2e-train`` modes of ``benchmark.py``: an
ImageNet-like tree of JPEG files (generated once under ``--data``, or
given), MMEngine's ``Runner`` built from the config as ``tools/test.py`` /
``tools/train.py`` build it, with its datasets pointed at the tree, and
``Runner.test()`` / ``Runner.train()`` timed through the real dataloader.
Reported: images/s after the first batch (train: after ``--warmup``
iterations), the time from the process start and from the loop start to
the first batch, the share of the loop's time spent waiting for data, the
whole command's time (test: to the printed table), and, train, how long
saving the checkpoint stalled the loop.
"""
import glob
import json
import os
import os.path as osp
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import torch
from mmengine.hooks import Hook

#: ImageNet-like JPEGs: sizes of ImageNet's common range, quality 90
WIDTHS, HEIGHTS, QUALITY = (400, 640), (333, 500), 90


def _write_jpegs(job):
    from PIL import Image
    seed, paths = job
    rng = np.random.default_rng(seed)
    for path in paths:
        w = int(rng.integers(WIDTHS[0], WIDTHS[1] + 1))
        h = int(rng.integers(HEIGHTS[0], HEIGHTS[1] + 1))
        coarse = rng.integers(0, 256, (h // 6 + 1, w // 6 + 1, 3),
                              dtype=np.uint8)
        img = np.asarray(Image.fromarray(coarse).resize((w, h),
                                                        Image.BICUBIC))
        noise = rng.normal(0, 10, (h, w, 3))
        img = np.clip(img + noise, 0, 255).astype(np.uint8)
        Image.fromarray(img).save(path, quality=QUALITY)


def make_jpeg_tree(root: str, sets: dict, seed: int = 0,
                   workers: int = 0) -> dict:
    """Write an ImageNet-like JPEG tree under ``root``, once.

    Args:
        sets: ``{name: (num_classes, images_per_class)}``; a set with
            ``num_classes > 1`` gets class folders ``c0000/...``, others
            are flat folders.
        workers: processes writing files (0: ``os.cpu_count()``).

    Returns:
        ``{name: folder}``. A tree is reused when ``root/spec.json`` shows
        it was completed with the same ``sets`` and ``seed``.
    """
    spec = dict(sets={k: list(v) for k, v in sets.items()}, seed=seed,
                widths=WIDTHS, heights=HEIGHTS, quality=QUALITY)
    marker = osp.join(root, 'spec.json')
    folders = {name: osp.join(root, name) for name in sets}
    if osp.isfile(marker):
        with open(marker) as f:
            if json.load(f) == json.loads(json.dumps(spec)):
                return folders
    paths = []
    for name, (num_classes, per_class) in sets.items():
        for c in range(num_classes):
            folder = osp.join(root, name, f'c{c:04d}') if num_classes > 1 \
                else osp.join(root, name)
            os.makedirs(folder, exist_ok=True)
            paths += [osp.join(folder, f'{i:05d}.jpg')
                      for i in range(per_class)]
    workers = workers or os.cpu_count() or 1
    chunks = [(seed * 100003 + i, paths[i::workers]) for i in range(workers)]
    if workers == 1:
        list(map(_write_jpegs, chunks))
    else:
        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(_write_jpegs, chunks))
    with open(marker, 'w') as f:
        json.dump(spec, f)
    return folders


class LoopTimer(Hook):
    """Times a test or train loop: when each batch arrives, how long the
    loop waited for it, and how long ``after_train_epoch`` took (the
    checkpoint save)."""
    priority = 'VERY_LOW'

    def __init__(self):
        self.loop_start = None
        self.arrivals, self.ends, self.waits, self.sizes = [], [], [], []
        self._last = None
        self.epoch_end_start = self.epoch_end = None

    def _begin(self):
        self.loop_start = self._last = time.perf_counter()

    def _arrive(self, data_batch):
        now = time.perf_counter()
        self.arrivals.append(now)
        self.waits.append(now - self._last)
        self.sizes.append(len(data_batch['data_samples']))

    def _end(self):
        self._last = time.perf_counter()
        self.ends.append(self._last)

    def before_test_epoch(self, runner):
        self._begin()

    def before_train_epoch(self, runner):
        self._begin()

    def before_test_iter(self, runner, batch_idx, data_batch=None):
        self._arrive(data_batch)

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self._arrive(data_batch)

    def after_test_iter(self, runner, batch_idx, data_batch=None,
                        outputs=None):
        self._end()

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        self._end()

    def after_train_epoch(self, runner):
        self.epoch_end = time.perf_counter()

    def summary(self, skip: int = 1, exclude=()) -> dict:
        """Figures over the iterations after the first ``skip``, leaving
        out the iterations (batch indices) in ``exclude`` (profiled)."""
        if len(self.ends) <= skip:
            raise RuntimeError(
                f'e2e benchmark: {len(self.ends)} iterations ran, need more '
                f'than {skip}: use more images or a smaller batch')
        kept = [i for i in range(skip, len(self.ends)) if i not in exclude]
        if not kept:
            raise RuntimeError(
                'e2e benchmark: no iteration left to time after the warm-up '
                'and the profiled ones: use more --iters')
        span = sum(self.ends[i] - self.ends[i - 1] for i in kept)
        images = sum(self.sizes[i] for i in kept)
        return dict(
            images_per_s=images / span,
            iterations_timed=len(kept),
            seconds_loop_to_first_batch=self.arrivals[0] - self.loop_start,
            data_wait_share=sum(self.waits[i] for i in kept) / span,
            seconds_per_iter=span / len(kept))


class ProfileWindow(Hook):
    """Profiles ``steps`` iterations of the real loop, from batch ``first``
    on, with ``torch.profiler`` (CUDA kernels of every stream, the decode
    thread's included); writes a Chrome trace to ``path`` and keeps
    :func:`profiling.trace_summary`'s figures in :attr:`result`."""
    priority = 'HIGHEST'

    def __init__(self, path: str, first: int, steps: int):
        self.path, self.first, self.steps = path, first, steps
        self.result = None
        self._prof = self._start = None

    def _at(self, batch_idx):
        from torch.profiler import ProfilerActivity, profile
        if batch_idx == self.first and self._start is None:  # once
            cuda = torch.cuda.is_available()
            self._prof = profile(activities=[ProfilerActivity.CPU] + (
                [ProfilerActivity.CUDA] if cuda else []))
            _synchronize()
            self._prof.start()
            self._start = time.perf_counter()
        elif batch_idx == self.first + self.steps and self._prof:
            self._finish()

    def _finish(self):
        from mmengine.logging import print_log
        from profiling import load_trace, trace_summary
        _synchronize()
        wall = time.perf_counter() - self._start
        self._prof.stop()
        self._prof.export_chrome_trace(self.path)
        cuda = torch.cuda.is_available()
        print_log('\n' + self._prof.key_averages().table(
            sort_by='self_cuda_time_total' if cuda else 'self_cpu_time_total',
            row_limit=25, max_name_column_width=60), logger='current')
        self.result = dict(
            trace=self.path, first_batch=self.first, steps=self.steps,
            wall_ms_per_step=wall * 1e3 / self.steps,
            **trace_summary(load_trace(self.path), self.steps))
        self._prof = None

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self._at(batch_idx)

    def before_test_iter(self, runner, batch_idx, data_batch=None):
        self._at(batch_idx)


def _synchronize():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class _EpochEndStart(Hook):
    """Marks the start of ``after_train_epoch`` (before the checkpoint
    hook) for :class:`LoopTimer`."""
    priority = 'HIGHEST'

    def __init__(self, timer):
        self.timer = timer

    def after_train_epoch(self, runner):
        self.timer.epoch_end_start = time.perf_counter()


def _point_at(cfg, folders, args, mode):
    """Point the config's test (train) datasets at the JPEG tree; with
    ``--pipeline device``, wrap its pipeline in ``DecodeOnDevice``."""
    from mmengine.config import ConfigDict

    def wrap(pipeline):
        if args.pipeline != 'device':
            return pipeline
        if len(pipeline) == 1 and pipeline[0]['type'] == 'DecodeOnDevice':
            pipeline = pipeline[0]['pipeline']
        return [dict(type='DecodeOnDevice', pipeline=pipeline,
                     cpu_share=args.cpu_share)]

    if mode == 'test':
        loader = cfg.test_dataloader
        dataset = loader.dataset
        dataset.id_dataset = ConfigDict(
            type='CustomDataset', data_root=folders['id'])
        dataset.ood_datasets = {
            name: ConfigDict(type='CustomDataset', data_root=folder,
                             with_label=False)
            for name, folder in folders.items() if name != 'id'
        }
        dataset.pop('ood_groups', None)
        dataset.pipeline = wrap(dataset.pipeline)
    else:
        loader = cfg.train_dataloader
        old = loader.dataset
        loader.dataset = ConfigDict(
            type='CustomDataset', data_root=folders['train'],
            pipeline=wrap(old.pipeline))
        cfg.train_cfg.max_epochs = 1
        # a last, smaller batch would recompile the compiled forwards for
        # dynamic shapes inside the timed iterations (once per run in real
        # training, here most of a short epoch's time)
        loader.drop_last = True
        # a constant learning rate: the speed does not depend on it, and
        # the schedules' warm-up is longer than a benchmark epoch
        cfg.param_scheduler = None
        for key in ('val_dataloader', 'val_cfg', 'val_evaluator',
                    'test_dataloader', 'test_cfg', 'test_evaluator'):
            cfg[key] = None
        cfg.default_hooks.checkpoint.interval = 1
        cfg.default_hooks.logger.interval = 10
    loader.batch_size = args.batch_size
    if args.workers is not None:
        loader.num_workers = args.workers
    loader.collate_fn = dict(type='stacked_collate')


def bench_e2e(cfg, args, device, process_start):
    """Run ``Runner.test()`` (``args.mode == 'e2e-test'``) or
    ``Runner.train()`` (``'e2e-train'``) on a JPEG tree; see the module
    docstring."""
    import tempfile
    from mmengine.runner import Runner
    mode = args.mode[len('e2e-'):]
    root = args.data or osp.join(tempfile.gettempdir(), 'cma_ood_e2e')
    num_classes = 1000 if cfg.model.get('classnames') in (
        None, 'imagenet') else len(cfg.model.classnames)
    if mode == 'test':
        per_class = max(args.id_images // num_classes, 1)
        sets = dict(id=(num_classes, per_class))
        sets.update({f'ood{i}': (1, args.ood_images) for i in range(4)})
    else:
        total = args.batch_size * (args.iters + args.warmup)
        sets = dict(train=(num_classes, -(-total // num_classes)))
    start = time.perf_counter()
    folders = make_jpeg_tree(root, sets, workers=args.gen_workers)
    generate_s = time.perf_counter() - start
    _point_at(cfg, folders, args, mode)
    cfg.model.pretrained = None
    if args.no_compile:
        cfg.model.compile = False
    cfg.work_dir = args.work_dir or tempfile.mkdtemp(prefix='e2e_')
    cfg.launcher = 'none'
    timer = LoopTimer()
    start = time.perf_counter()
    runner = Runner.from_cfg(cfg)
    runner.register_hook(timer)
    runner.register_hook(_EpochEndStart(timer))
    profiler = None
    if args.profile:
        profiler = ProfileWindow(args.profile,
                                 1 if mode == 'test' else args.warmup,
                                 args.profile_steps)
        runner.register_hook(profiler)
    if mode == 'test':
        runner.test()
    else:
        runner.train()
    hooks_end = time.perf_counter()
    profiled = () if profiler is None else range(
        profiler.first, profiler.first + profiler.steps + 1)
    result = timer.summary(skip=1 if mode == 'test' else args.warmup,
                           exclude=profiled)
    if profiler is not None:
        if profiler.result is None:
            raise RuntimeError(
                f'e2e benchmark: --profile-steps {args.profile_steps} from '
                f'batch {profiler.first} did not fit in the '
                f'{len(timer.ends)} batches that ran')
        result['profile'] = profiler.result
    result.update(
        pipeline=args.pipeline,
        cpu_share=args.cpu_share if args.pipeline == 'device' else None,
        num_workers=(cfg.test_dataloader if mode == 'test' else
                     cfg.train_dataloader).num_workers,
        images=sum(timer.sizes),
        files_per_set={k: len(glob.glob(osp.join(v, '**', '*.jpg'),
                                        recursive=True))
                       for k, v in folders.items()},
        seconds_generate_files=generate_s,
        seconds_process_to_first_batch=(timer.arrivals[0] - process_start -
                                        generate_s),
        seconds_runner_to_first_batch=timer.arrivals[0] - start,
        seconds_command=hooks_end - process_start - generate_s)
    if mode == 'train' and timer.epoch_end is not None:
        result['seconds_checkpoint_stall'] = (timer.epoch_end -
                                              timer.epoch_end_start)
    if torch.cuda.is_available():
        result['peak_memory_gib'] = torch.cuda.max_memory_allocated() / 2**30
    return result
