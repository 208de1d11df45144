# Runtime shared by every cma_ood config (mmpretrain layout).
default_scope = 'mmpretrain'
# registers cma_ood's components in mmpretrain's registries (nothing else:
# the safe checkpoint loader comes from SafeCheckpointHook below); works
# with tools/train.py, `mim train cma_ood` and mmengine.Config.fromfile
custom_imports = dict(imports=['cma_ood'], allow_failed_imports=False)

default_hooks = dict(
    # RuntimeInfoHook that reads the logged losses from the GPU at the
    # logger's and checkpoints' iterations instead of after every one (each
    # read waits for the GPU); the printed and saved values are the same
    runtime_info=dict(type='LazyRuntimeInfoHook'),
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=100),
    param_scheduler=dict(type='ParamSchedulerHook'),
    # CheckpointHook with crash-safe saving (temp file + rename; the
    # last_checkpoint file only ever names a complete checkpoint)
    checkpoint=dict(type='AtomicCheckpointHook', interval=1, max_keep_ckpts=3),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='VisualizationHook', enable=False),
)
custom_hooks = [
    # local checkpoints load with weights_only=True and cma_ood's allow-list
    # (torch>=2.6); the tools' --trust-checkpoint installs full unpickling
    dict(type='SafeCheckpointHook'),
    # class names from the dataset when model.classnames is None, and a
    # check that configured names match the dataset's class count
    dict(type='ClassNamesHook'),
    # OoD scorers prepared (NegLabel mined or loaded) before the val/test
    # loop, after the class names are known
    dict(type='PrepareScorersHook'),
    # CMA's schedule length epochs * (N // B + 1) from the training set
    # (only acts on CMAWarmupCosineLR schedulers without cycle_iters)
    dict(type='CMAScheduleHook'),
    # OoDOutputHook writes OoDMetric's ood_results.json (with the run's
    # provenance) and plots into the run's log dir
    dict(type='OoDOutputHook'),
    # GPU-decoded batches (DecodeOnDevice pipelines) are decoded one batch
    # ahead, on a side stream, while the model runs (no-op otherwise)
    dict(type='DecodeAheadHook'),
    # val/test progress every 10 s (LoggerHook: every 100 iterations)
    dict(type='ProgressHook', interval_s=10),
    # load_from / resume / tools/test.py refuse checkpoints of another
    # architecture (MMEngine would only warn and keep random weights)
    dict(type='CheckpointMatchHook'),
    # stop at the first NaN/inf loss, naming the iteration, before any
    # checkpoint holds it (checked on the GPU, read at the logger's and
    # checkpoints' iterations; interval=1 reads after every iteration)
    dict(type='FiniteLossHook'),
    # refuse a mid-epoch resume that the train loop cannot continue exactly
    # (train_cfg.type='ResumableEpochBasedTrainLoop' can)
    dict(type='ResumeCheckHook'),
]

# DDP: the model's only buffers are the constant prompt tokens, so there
# is nothing to broadcast from rank 0 before every forward; the compiled
# encoders stay whole graphs (no DDPOptimizer split, faster here:
# CompiledDistributedDataParallel, docs/benchmarks.md)
model_wrapper_cfg = dict(
    type='CompiledDistributedDataParallel',
    broadcast_buffers=False,
    optimize_ddp=False)

env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'),
)

vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='UniversalVisualizer', vis_backends=vis_backends)

log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0, deterministic=False)
