from .checkpoint_hooks import (AtomicCheckpointHook, CheckpointMatchHook,
                               SafeCheckpointHook)
from .class_names_hook import ClassNamesHook
from .decode_ahead_hook import DecodeAheadHook, DecodeAheadLoader
from .cma_schedule_hook import CMAScheduleHook
from .lazy_runtime_info_hook import LazyRuntimeInfoHook, host_read_due
from .ood_output_hook import OoDOutputHook
from .prepare_scorers_hook import PrepareScorersHook
from .progress_hook import ProgressHook
from .training_guard_hooks import FiniteLossHook, ResumeCheckHook

__all__ = [
    'AtomicCheckpointHook', 'CheckpointMatchHook', 'ClassNamesHook',
    'CMAScheduleHook', 'DecodeAheadHook', 'DecodeAheadLoader',
    'FiniteLossHook', 'LazyRuntimeInfoHook', 'OoDOutputHook',
    'PrepareScorersHook', 'ProgressHook', 'ResumeCheckHook',
    'SafeCheckpointHook', 'host_read_due'
]
