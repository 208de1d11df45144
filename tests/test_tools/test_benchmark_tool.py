"""tools/analysis_tools/benchmark.py on the CPU with tiny models: the JSON
record, the ratio to the reference loop and the profiler trace."""
import glob
import json
import os
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


def test_trace_summary_per_stream_thread_and_sync(busy_time):
    from profiling import trace_summary
    events = [
        # kernels: stream 7 busy [0, 30] + [50, 60], stream 9 [20, 40]
        dict(cat='kernel', ts=0, dur=30, args=dict(stream=7)),
        dict(cat='kernel', ts=50, dur=10, args=dict(stream=7)),
        dict(cat='kernel', ts=20, dur=20, args=dict(stream=9)),
        # host operators: thread 1 nested [0, 100], thread 2 [10, 30]
        dict(cat='cpu_op', ts=0, dur=100, tid=1),
        dict(cat='cpu_op', ts=10, dur=20, tid=1),
        dict(cat='cpu_op', ts=10, dur=20, tid=2),
        # waits of thread 1 (the launch is not one)
        dict(cat='cuda_runtime', name='cudaStreamSynchronize', ts=0,
             dur=40, tid=1),
        dict(cat='cuda_runtime', name='cudaEventSynchronize', ts=60,
             dur=20, tid=1),
        dict(cat='cuda_runtime', name='cudaLaunchKernel', ts=0, dur=5,
             tid=2),
        dict(name='process_name', ph='M'),  # no duration: ignored
    ]
    got = trace_summary(events, steps=2)  # microseconds -> ms per step
    assert got['gpu_busy_ms_per_step'] == pytest.approx(50 / 2e3)
    assert got['gpu_busy_ms_per_step_by_stream'] == pytest.approx(
        {'7': 40 / 2e3, '9': 20 / 2e3})
    assert got['cpu_op_ms_per_step_by_thread'] == pytest.approx(
        {'1': 100 / 2e3, '2': 20 / 2e3})
    assert got['sync_ms_per_step_by_thread'] == {
        '1': dict(ms=pytest.approx(60 / 2e3), calls=1.0)}
    assert trace_summary(events[3:], 1)['gpu_busy_ms_per_step'] is None


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
    assert '--profile works with --mode train, test, e2e-test ' in proc.stderr


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


@pytest.fixture(scope='module')
def e2e():
    sys.path.insert(0, osp.join(REPO, 'tools', 'analysis_tools'))
    try:
        import e2e_benchmark
        yield e2e_benchmark
    finally:
        sys.path.remove(osp.join(REPO, 'tools', 'analysis_tools'))


def test_jpeg_tree_is_imagenet_like_and_reused(e2e, tmp_path):
    from PIL import Image
    sets = dict(id=(3, 2), ood0=(1, 4))
    folders = e2e.make_jpeg_tree(str(tmp_path), sets, workers=1)
    ids = sorted(glob.glob(osp.join(folders['id'], '*', '*.jpg')))
    assert [osp.basename(osp.dirname(p)) for p in ids] == [
        'c0000', 'c0000', 'c0001', 'c0001', 'c0002', 'c0002']
    oods = sorted(glob.glob(osp.join(folders['ood0'], '*.jpg')))
    assert len(oods) == 4
    for path in ids + oods:
        with Image.open(path) as img:
            assert img.format == 'JPEG' and img.mode == 'RGB'
            w, h = img.size
        assert e2e.WIDTHS[0] <= w <= e2e.WIDTHS[1]
        assert e2e.HEIGHTS[0] <= h <= e2e.HEIGHTS[1]
    stamp = os.stat(oods[0]).st_mtime_ns
    e2e.make_jpeg_tree(str(tmp_path), sets, workers=1)  # complete: reused
    assert os.stat(oods[0]).st_mtime_ns == stamp
    e2e.make_jpeg_tree(str(tmp_path), dict(sets, ood0=(1, 5)), workers=1)
    assert len(glob.glob(osp.join(folders['ood0'], '*.jpg'))) == 5


def test_loop_timer_figures(e2e, monkeypatch):
    """Batches of 4 arriving after waits of 1, 0.5, 0.5 s and taking 2 s
    each: 8 images in the 5 s after the first batch, 0.2 of it waiting."""
    clock = iter([0.0, 1.0, 3.0, 3.5, 5.5, 6.0, 8.0])
    monkeypatch.setattr(e2e.time, 'perf_counter', lambda: next(clock))
    timer = e2e.LoopTimer()
    timer.before_test_epoch(None)
    for i in range(3):
        timer.before_test_iter(None, i, dict(data_samples=[0] * 4))
        timer.after_test_iter(None, i)
    got = timer.summary(skip=1)
    assert got['images_per_s'] == pytest.approx(8 / 5)
    assert got['data_wait_share'] == pytest.approx(1 / 5)
    assert got['seconds_loop_to_first_batch'] == pytest.approx(1.0)
    assert got['seconds_per_iter'] == pytest.approx(2.5)
    # leaving out batch 1 (profiled): batch 2 alone, 4 images in 2.5 s
    got = timer.summary(skip=1, exclude=range(1, 2))
    assert got['images_per_s'] == pytest.approx(4 / 2.5)
    assert got['data_wait_share'] == pytest.approx(0.5 / 2.5)
    assert got['iterations_timed'] == 1
    with pytest.raises(RuntimeError, match='3 iterations ran'):
        timer.summary(skip=3)
    with pytest.raises(RuntimeError, match='no iteration left to time'):
        timer.summary(skip=1, exclude=range(1, 3))


E2E_TINY = ['--cfg-options', 'model.arch=tiny-vit-32px',
            'model.classnames=[a,b,c]']


def test_e2e_test_mode_on_jpeg_files(tmp_path):
    """tools/test.py's path (Runner.test) over generated JPEGs, with the
    device pipeline (the CPU pipeline on a machine without CUDA)."""
    config = osp.join(REPO, 'configs', 'mcm',
                      'mcm_clip-vit-b16_1xb256_in1k-mos.py')
    out = tmp_path / 'e2e.json'
    run_tool(BENCH, config, '--mode', 'e2e-test', '--data',
             str(tmp_path / 'tree'), '--id-images', '12', '--ood-images',
             '5', '--batch-size', '8', '--workers', '1', '--gen-workers',
             '1', '--pipeline', 'device', '--work-dir', str(tmp_path / 'work'),
             '--out', str(out), *E2E_TINY,
             'test_dataloader.dataset.pipeline.1.scale=32',
             'test_dataloader.dataset.pipeline.2.crop_size=32',
             env=dict(OMP_NUM_THREADS='1'))
    result = json.loads(out.read_text())
    assert result['mode'] == 'e2e-test' and result['pipeline'] == 'device'
    assert result['files_per_set'] == dict(id=12, ood0=5, ood1=5, ood2=5,
                                           ood3=5)
    assert result['images'] == 32  # every file, once
    assert result['iterations_timed'] == 3  # 4 batches, the first skipped
    assert 0 <= result['data_wait_share'] <= 1
    assert result['images_per_s'] > 0
    assert 0 < result['seconds_runner_to_first_batch'] < result[
        'seconds_process_to_first_batch'] < result['seconds_command']
    assert result['synthetic']['scores'] == ['MCM']
    assert result['e2e_vs_synthetic'] == pytest.approx(
        result['images_per_s'] / result['synthetic']['images_per_s'])


def test_e2e_train_mode_times_the_checkpoint(tmp_path):
    config = osp.join(REPO, 'configs', 'cma',
                      'cma_clip-vit-b16_4xb128_in1k.py')
    out = tmp_path / 'e2e.json'
    work = tmp_path / 'work'
    run_tool(BENCH, config, '--mode', 'e2e-train', '--data',
             str(tmp_path / 'tree'), '--batch-size', '4', '--iters', '4',
             '--warmup', '1', '--workers', '1', '--gen-workers', '1',
             '--work-dir', str(work), '--no-synthetic', '--out', str(out),
             '--profile', str(tmp_path / 'trace.json'), '--profile-steps',
             '1', *E2E_TINY, 'train_dataloader.dataset.pipeline.1.scale=32',
             env=dict(OMP_NUM_THREADS='1'))
    result = json.loads(out.read_text())
    # 4 x (4 + 1) images asked: 3 classes x 7 files, 5 batches of 4
    # (drop_last); timed: batches 3 and 4 (0 is the warm-up, 1 profiled,
    # 2 holds the profiler's stop and export)
    assert result['files_per_set'] == dict(train=21)
    assert result['images'] == 20 and result['iterations_timed'] == 2
    assert result['seconds_checkpoint_stall'] > 0
    assert 'synthetic' not in result
    # the profiled step is the real loop's second (after the warm-up):
    # its trace holds the model's training step run by the loop's thread
    prof = result['profile']
    assert prof['first_batch'] == 1 and prof['steps'] == 1
    assert prof['wall_ms_per_step'] > 0
    assert prof['gpu_busy_ms_per_step'] is None  # no kernels on the CPU
    events = json.loads((tmp_path / 'trace.json').read_text())['traceEvents']
    names = {e.get('name') for e in events}
    assert 'Optimizer.step#AdamW.step' in names, sorted(names)[:40]
    assert sum(prof['cpu_op_ms_per_step_by_thread'].values()) > 0
    assert (work / 'epoch_1.pth').is_file()


def test_compare_pipelines_on_the_cpu(tmp_path):
    """tools/analysis_tools/compare_pipelines.py: the device pipeline's
    files (the JPEGs and the progressive one) and the CPU pipeline's (PNG,
    greyscale, CMYK, rotated); on the CPU both decode with libjpeg-turbo,
    so only the resizes' rounding differs."""
    out = tmp_path / 'cmp.json'
    run_tool(osp.join('tools', 'analysis_tools', 'compare_pipelines.py'),
             '--num', '4', '--odd-files', '--arch', 'none', '--out',
             str(out), env=dict(OMP_NUM_THREADS='1', TMPDIR=str(tmp_path)))
    result = json.loads(out.read_text())
    assert [r['pipeline'] for r in result['pipelines']] == [
        'test_pipeline', 'test_pipeline_bilinear', 'train_pipeline']
    for row in result['pipelines']:
        assert row['files'] == 9 and row['decoded_on_device'] == 5
        assert row['mean_abs_difference'] < 0.3
        assert row['max_abs_difference'] <= 2
        assert 'embedding_cosine_mean' not in row  # --arch none
