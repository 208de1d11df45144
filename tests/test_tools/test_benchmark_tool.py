"""tools/analysis_tools/benchmark.py on the CPU with tiny models: the JSON
record, the ratio to the reference loop and the profiler trace."""
import json
import os.path as osp
import sys

import pytest

from _helpers import DEMO_CONFIG, REPO, run_tool

BENCH = osp.join('tools', 'analysis_tools', 'benchmark.py')
TINY = ['--cfg-options', 'model.arch=tiny-vit-32px']


def bench(tmp_path, *args):
    out = tmp_path / 'result.json'
    run_tool(BENCH, DEMO_CONFIG, '--iters', '2', '--warmup', '1',
             '--batch-size', '4', '--out', str(out), *args, *TINY,
             env=dict(OMP_NUM_THREADS='1'))
    return json.loads(out.read_text())


@pytest.fixture(scope='module')
def busy_time():
    sys.path.insert(0, osp.join(REPO, 'tools', 'analysis_tools'))
    try:
        from benchmark import busy_time
        yield busy_time
    finally:
        sys.path.remove(osp.join(REPO, 'tools', 'analysis_tools'))


def test_busy_time_is_the_union_of_intervals(busy_time):
    assert busy_time([]) == 0
    assert busy_time([(0, 2), (1, 3), (5, 6)]) == 4  # [0, 3] + [5, 6]
    assert busy_time([(5, 6), (0, 10), (2, 3)]) == 10  # nested, unsorted
    assert busy_time([(0, 1), (1, 2)]) == 2  # touching


def test_train_record_and_ratio(tmp_path):
    result = bench(tmp_path, '--mode', 'train')
    assert result['mode'] == 'train' and result['world_size'] == 1
    assert result['device'] and result['torch'] and result['date']
    assert result['optim_wrapper'] == 'OptimWrapper'  # fp32 on the CPU
    assert result['images_per_s'] > 0 and result['loss'] > 0
    ref = result['reference']
    assert ref['batch_size'] == 4
    assert result['speedup_vs_reference'] == pytest.approx(
        result['images_per_s'] / ref['images_per_s'])


def test_test_mode_profile_trace(tmp_path):
    trace = tmp_path / 'trace.json'
    result = bench(tmp_path, '--mode', 'test', '--no-reference',
                   '--profile', str(trace), '--profile-steps', '2')
    assert 'reference' not in result and 'speedup_vs_reference' not in result
    assert result['scores'] == ['MCM', 'MSP', 'Energy']
    prof = result['profile']
    assert prof['trace'] == str(trace) and prof['steps'] == 2
    assert prof['wall_ms_per_step'] > 0
    assert prof['gpu_busy_ms_per_step'] is None  # no kernels on the CPU
    events = json.loads(trace.read_text())['traceEvents']
    assert any('test_step' in e.get('name', '') or 'aten::' in e.get(
        'name', '') for e in events)


def test_profile_refused_for_mine(tmp_path):
    proc = run_tool(BENCH, DEMO_CONFIG, '--mode', 'mine', '--profile',
                    str(tmp_path / 't.json'), check=False)
    assert proc.returncode != 0
    assert '--profile works with --mode train or test' in proc.stderr


def test_mine_record(tmp_path):
    # the demo baselines config mines from three small WordNet files
    config = osp.join(REPO, 'configs', 'demo',
                      'baselines_clip-tiny-rn_1xb256_shapes.py')
    out = tmp_path / 'mine.json'
    run_tool(BENCH, config, '--mode', 'mine', '--out', str(out),
             env=dict(OMP_NUM_THREADS='1'))
    result = json.loads(out.read_text())
    assert result['num_class_prompts'] == 1000  # classnames -> 'imagenet'
    assert 0 < result['num_negatives'] < result['num_candidates']
    assert 0 < result['seconds_warm'] and 0 < result['seconds_cold']
    assert result['speedup_vs_reference'] == pytest.approx(
        result['reference']['seconds_encode_only'] / result['seconds_warm'])
