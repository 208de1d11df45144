"""extract_features under 2 gloo processes (CPU): each rank encodes its
share of an odd-sized dataset (the sampler pads one duplicate), rank 0
writes one file equal to the single-process extraction (the raw
pre-projection features, format version 2), and a second run is a cache
hit on every rank (no rank encodes)."""
import os.path as osp
import socket

import pytest
import torch
import torch.multiprocessing as mp

pytestmark = pytest.mark.multiprocess

WORLD_SIZE = 2
TIMEOUT_S = 120
DATASET = dict(
    type='ShapesDataset',
    split='train',
    num_per_class=1,
    classes=('circle', 'square', 'triangle', 'star', 'cross'),
    img_size=32,
    test_mode=True,
    pipeline=[dict(type='PackInputs')])


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _model_and_loader():
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner

    from cma_ood.models import MultiModalClassifier
    init_default_scope('mmpretrain')
    torch.manual_seed(0)
    model = MultiModalClassifier(
        arch='tiny-rn-32px', pretrained=None,
        classnames=list(DATASET['classes']),
        test_template='a photo of a {}', ood_scorers=[]).eval()
    loader = Runner.build_dataloader(
        dict(batch_size=2, num_workers=0,
             sampler=dict(type='DefaultSampler', shuffle=False),
             dataset=dict(DATASET)))
    return model, loader


def _worker(rank, port, out_file, queue):
    import torch.distributed as dist
    torch.set_num_threads(1)
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}',
                            rank=rank, world_size=WORLD_SIZE)
    try:
        import cma_ood  # noqa: F401
        from cma_ood.engine.feature_extractor import extract_features
        model, loader = _model_and_loader()
        calls = []
        encode = model.encode_image
        model.encode_image = lambda x: (calls.append(x.shape[0]),
                                        encode(x))[1]
        kw = dict(out_file=out_file, dataset_cfg=DATASET,
                  show_progress=False)
        path = extract_features(model, loader, **kw)
        first = sum(calls)
        path2 = extract_features(model, loader, **kw)
        queue.put((rank, path, path2, first, sum(calls) - first))
    except Exception as err:  # report instead of hanging the parent
        queue.put((rank, f'{type(err).__name__}: {err}', None, -1, -1))
        raise
    finally:
        dist.destroy_process_group()


def test_distributed_extraction_matches_single_process(tmp_path):
    out_file = str(tmp_path / 'dist' / 'train.pt')
    ctx = mp.get_context('spawn')
    queue = ctx.Queue()
    procs = mp.start_processes(
        _worker, args=(_free_port(), out_file, queue), nprocs=WORLD_SIZE,
        join=False, start_method='spawn')
    results = {r[0]: r[1:] for r in
               (queue.get(timeout=TIMEOUT_S) for _ in range(WORLD_SIZE))}
    procs.join(timeout=60)
    for rank in range(WORLD_SIZE):
        path, path2, first, second = results[rank]
        assert path == path2 == out_file, results
        # 5 samples: ranks encode 3 each (one padded duplicate), then none
        assert (first, second) == (3, 0), results
    assert not [p for p in tmp_path.joinpath('dist').iterdir()
                if p.name != 'train.pt']  # part files cleaned up

    import cma_ood  # noqa: F401
    from cma_ood.engine.feature_extractor import extract_features
    from cma_ood.utils.feature_file import load_feature_file
    torch.set_num_threads(1)
    model, loader = _model_and_loader()
    single = extract_features(model, loader,
                              out_file=str(tmp_path / 'single.pt'),
                              dataset_cfg=DATASET, show_progress=False)
    dist_data, ref = load_feature_file(out_file), load_feature_file(single)
    assert ref['feats'].shape[0] == 5
    torch.testing.assert_close(dist_data['feats'], ref['feats'], atol=1e-6,
                               rtol=1e-5)
    for key in ('labels', 'sources', 'pseudo_labels'):
        assert torch.equal(dist_data[key], ref[key]), key
    assert dist_data['labels'].tolist() == [0, 1, 2, 3, 4]
    assert dist_data['meta']['cache_key'] == ref['meta']['cache_key']
    # the default kind: PLP's pre-projection features, un-normalised (the
    # tiny ResNet's have no separate projection: its raw embeddings)
    assert dist_data['meta']['feature'] == 'pre_projection'
    assert dist_data['projection'] is None
    with torch.no_grad():
        batch = model.data_preprocessor(next(iter(loader)), False)
        raw = model.clip.encode_image(batch['inputs']).float()
    torch.testing.assert_close(dist_data['feats'][:2], raw, atol=1e-5,
                               rtol=1e-4)
    assert osp.basename(out_file) == 'train.pt'
