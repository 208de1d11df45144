"""What a ``torch.profiler`` Chrome trace says about where time went.

Shared by ``benchmark.py`` (synthetic steps) and ``e2e_benchmark.py``
(steps of the real loop, decode thread included).
"""
import json
from collections import defaultdict

#: CUDA runtime calls in which the host waits for the device
SYNC_CALLS = ('cudaStreamSynchronize', 'cudaDeviceSynchronize',
              'cudaEventSynchronize')


def busy_time(intervals) -> float:
    """Length of the union of ``(start, end)`` intervals."""
    total, run_start, run_end = 0.0, None, None
    for start, end in sorted(intervals):
        if run_end is None or start > run_end:
            if run_end is not None:
                total += run_end - run_start
            run_start, run_end = start, end
        else:
            run_end = max(run_end, end)
    if run_end is not None:
        total += run_end - run_start
    return total


def trace_summary(events, steps: int) -> dict:
    """Milliseconds per step from a Chrome trace's ``traceEvents``.

    Returns:
        dict with ``gpu_busy_ms_per_step`` (union of all kernels, every
        stream; None without kernels), ``gpu_busy_ms_per_step_by_stream``
        (``{stream: ms}``), ``cpu_op_ms_per_step_by_thread`` (union of the
        operators run by each host thread, ``{tid: ms}``) and
        ``sync_ms_per_step_by_thread`` (time in :data:`SYNC_CALLS`, and
        their count per step, per thread).
    """
    kernels, by_stream = [], defaultdict(list)
    ops, syncs = defaultdict(list), defaultdict(lambda: [0.0, 0])
    for e in events:
        if 'dur' not in e:
            continue
        span = (e['ts'], e['ts'] + e['dur'])  # microseconds
        cat = e.get('cat')
        if cat == 'kernel':
            kernels.append(span)
            by_stream[str(e.get('args', {}).get('stream'))].append(span)
        elif cat == 'cpu_op':
            ops[str(e.get('tid'))].append(span)
        elif cat == 'cuda_runtime' and e.get('name') in SYNC_CALLS:
            entry = syncs[str(e.get('tid'))]
            entry[0] += e['dur']
            entry[1] += 1

    def ms(spans):
        return busy_time(spans) / 1e3 / steps

    return dict(
        gpu_busy_ms_per_step=ms(kernels) if kernels else None,
        gpu_busy_ms_per_step_by_stream={
            k: ms(v) for k, v in sorted(by_stream.items())},
        cpu_op_ms_per_step_by_thread={
            k: ms(v) for k, v in sorted(ops.items())},
        sync_ms_per_step_by_thread={
            k: dict(ms=v[0] / 1e3 / steps, calls=v[1] / steps)
            for k, v in sorted(syncs.items())})


def load_trace(path: str) -> list:
    with open(path) as f:
        return json.load(f)['traceEvents']
