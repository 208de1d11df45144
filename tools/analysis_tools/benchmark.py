"""Throughput of a cma_ood config on one GPU: synthetic, and end to end.

    python tools/analysis_tools/benchmark.py CONFIG --mode train [--amp]
        [--compile] [--batch-size 256] [--iters 30]
    python tools/analysis_tools/benchmark.py CONFIG --mode test
    python tools/analysis_tools/benchmark.py CONFIG --mode mine
    python tools/analysis_tools/benchmark.py CONFIG --mode e2e-test \
        [--pipeline device] [--data DIR] [--workers 16]
    python tools/analysis_tools/benchmark.py CONFIG --mode e2e-train

Weights are randomly initialised with the config's architecture (nothing is
downloaded); inputs are random uint8 images of the config's resolution and
random labels of its classes, already on the device (data loading is not
measured). After ``--warmup`` iterations, ``--iters`` iterations are timed
between CUDA synchronisations.

* train: the full MMEngine training iteration of the configured model
  (``model.train_step``: data preprocessor, forward, CMA loss, backward,
  optimizer step through the configured optim wrapper); images/s and peak
  GPU memory.
* test: ``model.test_step`` (image encoding and every configured OoD
  score); images/s.
* mine: seconds to encode the NegLabel candidates and mine the negatives
  (the config's ``NegLabelScorer``, or the default one): cold (tokenising
  included) and warm (token ids cached on disk, as in repeated test runs).

* e2e-test / e2e-train: ``Runner.test()`` / ``Runner.train()`` (one
  epoch) of the config on an ImageNet-like tree of JPEG files (generated
  under ``--data`` once, reused afterwards), through the real dataloader,
  with the config's pipeline or ``--pipeline device`` (its
  ``device_*_pipeline``: JPEG decoding on the GPU). Images/s, time to the
  first batch, the share of time waiting for data, the checkpoint stall
  (train) and, unless ``--no-synthetic``, the synthetic figure of the same
  config in the same run (tools/analysis_tools/e2e_benchmark.py).

In the same process it runs a plain fp32 loop equal to the published
training step (openai-clip forward, normalisation, the CMA formula over
77-token prompts, ``torch.optim.AdamW``; for test: the fp16 image encoder,
for mine: the fp16 text encoder over 77 tokens) on the same inputs, and
prints our figure as a ratio to it. ``--out`` writes everything as JSON.
``--profile TRACE.json`` also runs ``--profile-steps`` steps under
``torch.profiler`` (e2e modes: steps of the real loop after the first batch
/ the warm-up, and the synthetic steps into ``TRACE.synthetic.json``),
writes a Chrome trace (one per rank under torchrun), logs the most
expensive operators and adds to the result the wall time and the GPU busy
time per step (the union of the kernels' intervals, all streams; also per
stream), the host operators' time per thread and the time the host threads
spent waiting in CUDA synchronisations (tools/analysis_tools/profiling.py):
wall minus busy is the time the GPU waits for the host.
"""
import time

PROCESS_START = time.perf_counter()  # noqa: E402 (e2e: time to first batch)

import argparse  # noqa: E402
import json  # noqa: E402
import os.path as osp  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from mmengine.config import Config, DictAction  # noqa: E402
from mmengine.optim import build_optim_wrapper  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402
from mmpretrain.registry import MODELS  # noqa: E402
from mmpretrain.structures import DataSample  # noqa: E402
from profiling import busy_time, load_trace, trace_summary  # noqa: E402,F401


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config')
    parser.add_argument(
        '--mode', choices=['train', 'test', 'mine', 'e2e-test', 'e2e-train'],
        default='train')
    parser.add_argument('--batch-size', type=int, default=256)
    parser.add_argument('--iters', type=int, default=30)
    parser.add_argument('--warmup', type=int, default=10)
    amp = parser.add_mutually_exclusive_group()
    amp.add_argument('--amp', action='store_true',
                     help='force mixed precision (bf16 where supported)')
    amp.add_argument('--fp32', action='store_true',
                     help='force fp32 (plain OptimWrapper, no autocast)')
    compile_group = parser.add_mutually_exclusive_group()
    compile_group.add_argument(
        '--compile', nargs='?', const='default', default=None,
        help='force torch.compile of the encoders (model.compile), '
        'optionally with a torch.compile mode, e.g. reduce-overhead; '
        'default: as the config says')
    compile_group.add_argument('--no-compile', action='store_true',
                               help='force eager execution')
    parser.add_argument('--no-reference', action='store_true',
                        help='skip the published-step reference loop')
    parser.add_argument('--reference-batch-size', type=int, default=None,
                        help='batch of the reference loop (default: same)')
    parser.add_argument('--out', help='write the results to this JSON file')
    parser.add_argument('--profile', metavar='TRACE',
                        help='also profile --profile-steps steps with '
                        'torch.profiler and write a Chrome trace here '
                        '(e2e: steps of the real loop, after the first '
                        'batch / the warm-up)')
    parser.add_argument('--profile-steps', type=int, default=5)
    parser.add_argument(
        '--launcher', choices=['none', 'pytorch'], default='none',
        help='pytorch: one process per GPU under torchrun, the model wrapped '
        'in the config\'s model_wrapper_cfg (train mode; --batch-size per '
        'GPU)')
    e2e = parser.add_argument_group('e2e-test / e2e-train')
    e2e.add_argument('--data', help='folder of the generated JPEG tree '
                     '(default: $TMPDIR/cma_ood_e2e; reused when complete)')
    e2e.add_argument('--pipeline', choices=['cpu', 'device'], default='cpu',
                     help='the config\'s pipeline, or its device_*_pipeline '
                     '(JPEG decoding on the GPU)')
    e2e.add_argument('--cpu-share', type=float, default=0.0,
                     help='with --pipeline device: share of the JPEGs '
                     'decoded on the CPU by the workers anyway '
                     '(DecodeOnDevice(cpu_share=...))')
    e2e.add_argument('--workers', type=int, default=None,
                     help='dataloader workers (default: the config\'s)')
    e2e.add_argument('--id-images', type=int, default=10000,
                     help='e2e-test: ID images (over the config\'s classes)')
    e2e.add_argument('--ood-images', type=int, default=5000,
                     help='e2e-test: images of each of 4 OoD sets')
    e2e.add_argument('--gen-workers', type=int, default=0,
                     help='processes writing the JPEG tree (0: all cores)')
    e2e.add_argument('--work-dir', help='the runner\'s work dir (default: '
                     'a new temporary folder)')
    e2e.add_argument('--no-synthetic', action='store_true',
                     help='skip the synthetic figure of the same config')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    return parser.parse_args()


def synchronize():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(step, iters, warmup):
    """Seconds per call of ``step`` after ``warmup`` calls."""
    for _ in range(warmup):
        step()
    synchronize()
    start = time.perf_counter()
    for _ in range(iters):
        step()
    synchronize()
    return (time.perf_counter() - start) / iters


def profile_steps(step, path, steps):
    """Run ``step`` ``steps`` times under ``torch.profiler``; write a
    Chrome trace to ``path`` (``.rankN`` inserted under torchrun) and
    return per-step wall and GPU busy milliseconds."""
    from mmengine.dist import get_rank, get_world_size
    from mmengine.logging import print_log
    from torch.profiler import ProfilerActivity, profile
    if get_world_size() > 1:
        root, ext = osp.splitext(path)
        path = f'{root}.rank{get_rank()}{ext}'
    cuda = torch.cuda.is_available()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA]
                                           if cuda else [])
    with profile(activities=activities) as prof:
        synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            step()
        synchronize()
        wall = time.perf_counter() - start
    prof.export_chrome_trace(path)
    summary = trace_summary(load_trace(path), steps)
    if get_rank() == 0:
        print_log('\n' + prof.key_averages().table(
            sort_by='self_cuda_time_total' if cuda else 'self_cpu_time_total',
            row_limit=20, max_name_column_width=60), logger='current')
    return dict(trace=path, steps=steps, wall_ms_per_step=wall * 1e3 / steps,
                **summary)


def synthetic_batch(model, batch_size, device, seed=0):
    g = torch.Generator(device='cpu').manual_seed(seed)
    res = model.clip.visual.input_resolution
    images = torch.randint(0, 256, (batch_size, 3, res, res), generator=g,
                           dtype=torch.uint8).to(device)
    labels = torch.randint(0, model.num_classes, (batch_size, ), generator=g)
    samples = [DataSample().set_gt_label(int(y)) for y in labels]
    return dict(inputs=images, data_samples=samples), labels.to(device)


def build_model(cfg, args, device):
    model_cfg = cfg.model.copy()
    model_cfg['pretrained'] = None
    if model_cfg.get('classnames', 'imagenet') is None:
        model_cfg['classnames'] = 'imagenet'
    if getattr(args, 'no_compile', False):
        model_cfg['compile'] = False
    elif getattr(args, 'compile', None):
        model_cfg['compile'] = (True if args.compile == 'default' else
                                dict(mode=args.compile))
    for scorer in model_cfg.get('ood_scorers', []):
        if scorer['type'] == 'NegLabelScorer':
            scorer['cache_dir'] = False  # measure mining, not the cache
    return MODELS.build(model_cfg).to(device)


def optim_wrapper_cfg(cfg, args):
    from cma_ood.engine import amp_optim_wrapper_cfg
    wrapper = cfg.optim_wrapper.copy()
    if args.amp:
        wrapper = amp_optim_wrapper_cfg(wrapper)
    elif args.fp32:
        wrapper = {k: v for k, v in wrapper.items()
                   if k not in ('dtype', 'loss_scale')}
        wrapper['type'] = 'OptimWrapper'
    return wrapper


def peak_memory_gib():
    if not torch.cuda.is_available():
        return None
    return torch.cuda.max_memory_allocated() / 2**30


def reset_memory():
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


# ---------------------------------------------------------------- reference
def reference_clip(model, device, half=False):
    """A fresh openai-clip CLIP of the same architecture; ``half``: with
    clip.load's fp16 conversion (LayerNorms stay fp32)."""
    from clip.model import convert_weights
    from cma_ood.models.multimodal.clip_builder import build_clip
    clip_model = build_clip(model.arch).to(device)
    if half:
        convert_weights(clip_model)
    return clip_model


def reference_train_step(model, batch_size, device, lam):
    """The published step: fp32, 77-token prompt per sample, full B x B
    logits, torch.optim.AdamW with its default implementation."""
    from cma_ood.models.multimodal.clip_builder import tokenize
    from cma_ood.models.multimodal.classifier import CLIP_MEAN, CLIP_STD
    clip_model = reference_clip(model, device).train()
    optimizer = torch.optim.AdamW(clip_model.parameters(), lr=1e-5,
                                  weight_decay=0.1)
    prompts = [model.train_template.format(c) for c in model.classnames]
    tokens = tokenize(prompts, clip_model.context_length).to(device)
    data, labels = synthetic_batch(model, batch_size, device)
    mean = torch.tensor(CLIP_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=device).view(1, 3, 1, 1)

    def step():
        images = (data['inputs'].flip(1).float() - mean) / std
        img = F.normalize(clip_model.encode_image(images), dim=-1)
        txt = F.normalize(clip_model.encode_text(tokens[labels]), dim=-1)
        logits = clip_model.logit_scale.exp() * img @ txt.T
        targets = torch.arange(len(labels), device=device)
        loss = (F.cross_entropy(logits, targets) -
                lam * torch.logsumexp(logits, 1).mean() +
                F.cross_entropy(logits.T, targets) -
                lam * torch.logsumexp(logits.T, 1).mean()) / 2
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def reference_test_step(model, batch_size, device):
    """The published scoring encoder: fp16 weights (clip.load on GPU)."""
    from cma_ood.models.multimodal.classifier import CLIP_MEAN, CLIP_STD
    half = device.type == 'cuda'
    dtype = torch.float16 if half else torch.float32
    clip_model = reference_clip(model, device, half).eval()
    data, _ = synthetic_batch(model, batch_size, device)
    mean = torch.tensor(CLIP_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=device).view(1, 3, 1, 1)

    @torch.no_grad()
    def step():
        images = ((data['inputs'].flip(1).float() - mean) / std).to(dtype)
        clip_model.encode_image(images)

    return step


# -------------------------------------------------------------------- modes
def _amp_dtype_of(wrapper) -> str:
    from cma_ood.engine import BF16OptimWrapper
    if isinstance(wrapper, BF16OptimWrapper):
        return 'bfloat16'
    return str(getattr(wrapper, 'cast_dtype', None) or 'float32')


def bench_train(cfg, args, device):
    from mmengine.dist import get_world_size
    model = build_model(cfg, args, device).train()
    wrapper = build_optim_wrapper(model, optim_wrapper_cfg(cfg, args))
    data, _ = synthetic_batch(model, args.batch_size, device)
    runner_model = model
    if args.launcher != 'none':
        # the config's wrapper, built as MMEngine's runner builds it
        from mmpretrain.registry import MODEL_WRAPPERS
        ddp_cfg = dict(cfg.get('model_wrapper_cfg')
                       or dict(type='MMDistributedDataParallel'))
        ddp_cfg.update(module=model,
                       device_ids=[torch.cuda.current_device()])
        runner_model = MODEL_WRAPPERS.build(ddp_cfg)
    world_size = get_world_size()
    reset_memory()
    log = {}

    def step():
        log.update(runner_model.train_step(data, wrapper))

    seconds = timed(step, args.iters, args.warmup)
    result = dict(images_per_s=world_size * args.batch_size / seconds,
                  world_size=world_size,
                  peak_memory_gib=peak_memory_gib(),
                  loss=float(log['loss'].detach()),
                  optim_wrapper=type(wrapper).__name__,
                  amp_dtype=_amp_dtype_of(wrapper))
    if args.profile:
        result['profile'] = profile_steps(step, args.profile,
                                          args.profile_steps)
    lam = getattr(model.loss_module, 'lam', 0.0)
    # free our model's memory before the reference loop
    log.clear()
    runner_model = model = wrapper = data = None
    if not args.no_reference and world_size == 1:
        reset_memory()
        ref_batch = args.reference_batch_size or args.batch_size
        ref_model = build_model(cfg, argparse.Namespace(no_compile=True),
                                device)
        step = reference_train_step(ref_model, ref_batch, device, lam)
        del ref_model
        seconds = timed(step, max(args.iters // 3, 3), 3)
        result['reference'] = dict(images_per_s=ref_batch / seconds,
                                   batch_size=ref_batch,
                                   peak_memory_gib=peak_memory_gib())
    return result


def bench_test(cfg, args, device):
    model = build_model(cfg, args, device).eval()
    data, _ = synthetic_batch(model, args.batch_size, device)
    use_amp = device.type == 'cuda' and not args.fp32
    from cma_ood.engine import amp_dtype

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16 if device.type
                            != 'cuda' else getattr(torch, amp_dtype()),
                            enabled=use_amp):
            model.test_step(data)

    reset_memory()
    seconds = timed(step, args.iters, args.warmup)
    result = dict(images_per_s=args.batch_size / seconds,
                  peak_memory_gib=peak_memory_gib(), autocast=use_amp,
                  scores=[s.name for s in model.ood_scorers])
    if args.profile:
        result['profile'] = profile_steps(step, args.profile,
                                          args.profile_steps)
    if not args.no_reference:
        step = reference_test_step(model, args.batch_size, device)
        seconds = timed(step, args.iters, args.warmup)
        result['reference'] = dict(images_per_s=args.batch_size / seconds)
    return result


def bench_mine(cfg, args, device):
    from cma_ood.models.multimodal.clip_builder import tokenize
    from cma_ood.models.ood_scorers.neglabel import NegLabelScorer
    model = build_model(cfg, args, device).eval()
    scorers = [s for s in model.ood_scorers if isinstance(s, NegLabelScorer)]
    scorer = scorers[0] if scorers else NegLabelScorer().to(device)
    use_amp = device.type == 'cuda' and not args.fp32
    from cma_ood.engine import amp_dtype
    dtype = getattr(torch, amp_dtype()) if use_amp else torch.float32
    with tempfile.TemporaryDirectory() as tmp:
        scorer.cache_dir = tmp  # token ids cached here, negatives not
        scorer.show_progress = False

        def mine():
            synchronize()
            start = time.perf_counter()
            with torch.autocast(device.type, dtype=dtype, enabled=use_amp):
                nouns, adjs = scorer.read_candidates()
                model.invalidate_cache()  # ID prompts re-encoded too
                result = scorer.mine(model.scorer_context(), nouns, adjs)
            synchronize()
            return time.perf_counter() - start, result, len(nouns) + len(adjs)

        cold, result, num_candidates = mine()
        warm = min(mine()[0] for _ in range(3))
    out = dict(seconds_warm=warm, seconds_cold=cold,
               num_candidates=num_candidates,
               num_class_prompts=model.num_classes,
               num_negatives=len(result['labels']), autocast=use_amp)
    if not args.no_reference:
        nouns, adjs = scorer.read_candidates()
        prompts = scorer.prompts(nouns + adjs, ['n'] * len(nouns) +
                                 ['a'] * len(adjs))
        tokens = tokenize(prompts, model.context_length).to(device)
        ref = reference_clip(model, device, device.type == 'cuda').eval()

        @torch.no_grad()
        def encode_all():
            for i in range(0, len(tokens), 1024):
                ref.encode_text(tokens[i:i + 1024])

        encode_all()
        synchronize()
        start = time.perf_counter()
        encode_all()
        synchronize()
        out['reference'] = dict(seconds_encode_only=time.perf_counter() -
                                start)
    return out


def main():
    args = parse_args()
    if args.profile and args.mode == 'mine':
        raise SystemExit('--profile works with --mode train, test, e2e-test '
                         'and e2e-train')
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    if args.launcher != 'none':
        from mmengine.dist import init_dist
        init_dist(args.launcher)  # sets the CUDA device of this rank
    device = torch.device(
        f'cuda:{torch.cuda.current_device()}' if torch.cuda.is_available()
        else 'cpu')
    if device.type == 'cuda':
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 stays fp32
    if args.mode.startswith('e2e-'):
        from e2e_benchmark import bench_e2e
        import copy
        synthetic_cfg = copy.deepcopy(cfg)
        result = bench_e2e(cfg, args, device, PROCESS_START)
        if not args.no_synthetic:
            args.no_reference = True
            if args.profile:  # the synthetic steps' trace next to it
                root, ext = osp.splitext(args.profile)
                args.profile = f'{root}.synthetic{ext}'
            bench = bench_test if args.mode == 'e2e-test' else bench_train
            result['synthetic'] = bench(synthetic_cfg, args, device)
            result['e2e_vs_synthetic'] = (
                result['images_per_s'] /
                result['synthetic']['images_per_s'])
    else:
        bench = dict(train=bench_train, test=bench_test, mine=bench_mine)
        result = bench[args.mode](cfg, args, device)
    ref = result.get('reference', {})
    if args.mode == 'mine':
        if ref:
            result['speedup_vs_reference'] = (ref['seconds_encode_only'] /
                                              result['seconds_warm'])
    elif ref:
        result['speedup_vs_reference'] = (result['images_per_s'] /
                                          ref['images_per_s'])
    result.update(
        config=args.config, mode=args.mode, batch_size=args.batch_size,
        iters=args.iters,
        compile=('off' if args.no_compile else args.compile
                 or str(cfg.model.get('compile', False))),
        device=(torch.cuda.get_device_name() if device.type == 'cuda' else
                platform.processor() or 'cpu'),
        torch=torch.__version__,
        date=time.strftime('%Y-%m-%d'))
    text = json.dumps(result, indent=2)
    from mmengine.dist import get_rank
    if get_rank() != 0:
        return
    from mmengine.logging import print_log
    print_log('\n' + text, logger='current')
    if args.out:
        with open(args.out, 'w') as f:
            f.write(text + '\n')


if __name__ == '__main__':
    main()
