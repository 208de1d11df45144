"""Distributed tests of CMALoss and gather_with_grad (2 gloo processes, CPU).

All distributed cases run in ONE spawn of two worker processes (importing
the package costs several seconds per process); the workers write their
results to files and the individual tests below check them against the
single-process loss on the concatenated batch.
"""
import importlib
import os.path as osp
import socket
import time
import traceback
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from cma_ood.models import CMALoss
from mmengine.dist import get_dist_info

from cma_ood.utils.dist import gather_with_grad

WORLD_SIZE = 2
SPAWN_TIMEOUT_S = 120  # whole spawn; a deadlocked collective fails, not hangs
PG_TIMEOUT_S = 60


pytestmark = [pytest.mark.usefixtures('single_thread'), pytest.mark.multiprocess]


# name -> (per-rank sizes, lam, D, logit scale, duplicate text rows)
LOSS_CASES = {
    'even_4+4': ((4, 4), 0.001, 16, 1 / 0.07, False),
    'even_4+4_flyp': ((4, 4), 0.0, 16, 1 / 0.07, False),
    'even_3+3_lam3_dup': ((3, 3), 3.0, 5, 20.0, True),
    'uneven_5+3': ((5, 3), 0.5, 7, 1 / 0.07, False),
    'uneven_5+3_dup': ((5, 3), 0.001, 7, 100.0, True),
    'uneven_1+6': ((1, 6), 3.0, 9, 1 / 0.07, False),
    'uneven_6+1_flyp': ((6, 1), 0.0, 9, 50.0, True),
    'tiny_1+1': ((1, 1), 0.5, 3, 10.0, False),
}
HOST_GROUP_SIZES = (5, 3)
GATHER_CASES = {
    'even_3+3': ((3, 3), (4, )),
    'uneven_5+2': ((5, 2), (4, )),
    'uneven_1+4_3d': ((1, 4), (2, 3)),
}


# ------------------------------------------------------------- helpers
def global_batch(sizes, D, scale, dup, seed):
    """The same raw float64 global batch on every process."""
    n = sum(sizes)
    g = torch.Generator().manual_seed(seed)
    img = torch.randn(n, D, generator=g, dtype=torch.float64)
    txt = torch.randn(n, D, generator=g, dtype=torch.float64) + 1.5 * img
    img = img * torch.exp(torch.randn(n, 1, generator=g, dtype=img.dtype))
    txt = txt * torch.exp(torch.randn(n, 1, generator=g, dtype=img.dtype))
    if dup and n >= 2:
        # duplicated classes, spread across the two ranks
        classes = torch.arange(n) % max(1, n // 2)
        txt = txt[classes].clone()
    return img, txt, torch.tensor(scale, dtype=torch.float64)


def local_slice(sizes, rank):
    start = sum(sizes[:rank])
    return slice(start, start + sizes[rank])


def ref_loss(image_embeds, text_embeds, logit_scale, lam):
    """REFERENCE.md's formula on one process (full N x N matrices)."""
    I = F.normalize(image_embeds, dim=-1)  # noqa: E741
    T = F.normalize(text_embeds, dim=-1)
    logits = logit_scale * I @ T.T
    targets = torch.arange(I.shape[0])
    ce_img = F.cross_entropy(logits, targets)
    ce_txt = F.cross_entropy(logits.T, targets)
    cma_img = (-torch.logsumexp(logits, dim=1)).mean()
    cma_txt = (-torch.logsumexp(logits.T, dim=1)).mean()
    return (ce_img + lam * cma_img) / 2 + (ce_txt + lam * cma_txt) / 2


def loss_and_grads(fn, img, txt, s):
    img = img.detach().clone().requires_grad_(True)
    txt = txt.detach().clone().requires_grad_(True)
    s = s.detach().clone().requires_grad_(True)
    loss = fn(img, txt, s)
    loss.backward()
    return loss.detach(), img.grad, txt.grad, s.grad


def gather_inputs(sizes, tail, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(sum(sizes), *tail, generator=g, dtype=torch.float64)
    w = torch.randn(sum(sizes), *tail, generator=g, dtype=torch.float64)
    return x, w


def find_free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


# ---------------------------------------------------------- the worker
def _run_loss_case(rank, sizes, lam, D, scale, dup, seed):
    # (``import ... as`` would give the function: the package re-exports
    # ``cma_loss`` under the submodule's name)
    cma_mod = importlib.import_module('cma_ood.models.losses.cma_loss')
    img_g, txt_g, s = global_batch(sizes, D, scale, dup, seed)
    sl = local_slice(sizes, rank)
    img = img_g[sl].clone().requires_grad_(True)
    txt = txt_g[sl].clone().requires_grad_(True)
    s = s.clone().requires_grad_(True)

    # record what the per-row terms are computed from on this rank
    calls = []
    orig_terms = cma_mod.cma_loss_terms

    def recording_terms(image_embeds, text_embeds, all_image_embeds,
                        all_text_embeds, logit_scale, offset=0):
        calls.append(
            dict(image=tuple(image_embeds.shape),
                 text=tuple(text_embeds.shape),
                 all_image=tuple(all_image_embeds.shape),
                 all_text=tuple(all_text_embeds.shape),
                 offset=offset))
        out = orig_terms(image_embeds, text_embeds, all_image_embeds,
                         all_text_embeds, logit_scale, offset)
        calls[-1]['terms'] = [tuple(t.shape) for t in out]
        return out

    # and every tensor autograd saves for backward (the big ones would be
    # the logit matrices): none may be N x N on a rank
    saved_shapes = []

    def pack(t):
        saved_shapes.append(tuple(t.shape))
        return t

    cma_mod.cma_loss_terms = recording_terms
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            parts = CMALoss(lam=lam)(img, txt, s, output_dict=True)
    finally:
        cma_mod.cma_loss_terms = orig_terms
    parts['loss'].backward()

    # the local (gather_with_grad=False) objective on the same rows
    img2 = img_g[sl].clone().requires_grad_(True)
    txt2 = txt_g[sl].clone().requires_grad_(True)
    s2 = s.detach().clone().requires_grad_(True)
    local_loss = CMALoss(lam=lam, gather_with_grad=False)(img2, txt2, s2)
    local_loss.backward()

    return dict(loss=parts['loss'].detach(),
                contrastive=parts['contrastive'],
                alignment=parts['alignment'],
                grad_img=img.grad,
                grad_txt=txt.grad,
                grad_scale=s.grad,
                calls=calls,
                saved_shapes=saved_shapes,
                nograd_loss=local_loss.detach(),
                nograd_grad_img=img2.grad,
                nograd_grad_txt=txt2.grad,
                nograd_grad_scale=s2.grad)


def _run_gather_case(rank, sizes, tail, seed):
    x_g, w = gather_inputs(sizes, tail, seed)
    x = x_g[local_slice(sizes, rank)].clone().requires_grad_(True)
    out = dict()
    # sizes computed inside (extra collective) and passed explicitly
    for key, sz in (('auto', None), ('given', list(sizes))):
        x.grad = None
        gathered = gather_with_grad(x, sz)
        loss = (rank + 1) * (gathered * w).sum()
        loss.backward()
        out[key] = dict(gathered=gathered.detach(), grad=x.grad.clone())
    return out


def _run_host_group_case(rank, sizes, seed):
    """CMALoss under a default group whose backend works on the GPU (as
    NCCL): the batch sizes must go through a separate CPU group, and the
    embeddings through one collective of the default group."""
    dist_mod = importlib.import_module('cma_ood.utils.dist')
    default = dist.distributed_c10d._get_default_group()
    real_comm_device = dist_mod.get_comm_device

    def comm_device(group=None):
        # the default group pretends to be NCCL (the tensors it would
        # need live on the GPU); other groups answer truthfully
        if group is None or group is default:
            return torch.device('cuda')
        return real_comm_device(group)

    calls = []
    real_all_gather = dist.all_gather

    def recording_all_gather(tensor_list, tensor, group=None, **kw):
        calls.append(dict(default=group is None or group is default,
                          dtype=tensor.dtype, device=tensor.device.type,
                          shape=tuple(tensor.shape)))
        return real_all_gather(tensor_list, tensor, group=group, **kw)

    img_g, txt_g, s = global_batch(sizes, 6, 1 / 0.07, False, seed)
    sl = local_slice(sizes, rank)
    loss = CMALoss(lam=0.5)
    dist_mod.get_comm_device = comm_device
    dist.all_gather = recording_all_gather
    try:
        first = loss(img_g[sl], txt_g[sl], s)
        group = loss._host_group
        second = loss(img_g[sl], txt_g[sl], s)
        same_group = loss._host_group is group
        direct = dist_mod.all_gather_sizes(sizes[rank] + 10, group)
    finally:
        dist_mod.get_comm_device = real_comm_device
        dist.all_gather = real_all_gather
    return dict(first=first.detach(), second=second.detach(), calls=calls,
                host_group_is_default=group is default,
                host_group_backend=dist.get_backend(group),
                same_group=same_group, direct=direct)


def _worker(rank, world_size, port, result_dir):
    try:
        torch.set_num_threads(1)
        dist.init_process_group('gloo',
                                init_method=f'tcp://127.0.0.1:{port}',
                                rank=rank,
                                world_size=world_size,
                                timeout=timedelta(seconds=PG_TIMEOUT_S))
        try:
            assert get_dist_info() == (rank, world_size)
            results = dict(loss={}, gather={})
            for i, (name, case) in enumerate(sorted(LOSS_CASES.items())):
                results['loss'][name] = _run_loss_case(rank, *case,
                                                       seed=1000 + i)
            for i, (name, case) in enumerate(sorted(GATHER_CASES.items())):
                results['gather'][name] = _run_gather_case(rank, *case,
                                                           seed=2000 + i)
            results['host_group'] = _run_host_group_case(
                rank, HOST_GROUP_SIZES, seed=3000)
            dist.barrier()
        finally:
            dist.destroy_process_group()
        torch.save(results, osp.join(result_dir, f'rank{rank}.pt'))
    except BaseException:
        # keep the traceback for the parent, then fail this process (the
        # spawn context turns that into an exception in the parent)
        with open(osp.join(result_dir, f'rank{rank}.err'), 'w') as f:
            f.write(traceback.format_exc())
        raise


# ------------------------------------------------- one spawn, all cases
@pytest.fixture(scope='module')
def dist_results(tmp_path_factory):
    result_dir = str(tmp_path_factory.mktemp('dist_cma'))
    port = find_free_port()
    ctx = mp.start_processes(_worker,
                             args=(WORLD_SIZE, port, result_dir),
                             nprocs=WORLD_SIZE,
                             join=False,
                             start_method='spawn')
    deadline = time.monotonic() + SPAWN_TIMEOUT_S
    try:
        # join() raises ProcessRaisedException / ProcessExitedException as
        # soon as one worker fails (and terminates the other)
        while not ctx.join(timeout=1):
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f'distributed workers did not finish in '
                    f'{SPAWN_TIMEOUT_S} s')
    except BaseException as exc:
        for p in ctx.processes:
            if p.is_alive():
                p.terminate()
        for p in ctx.processes:
            p.join(5)
            if p.is_alive():
                p.kill()
        errs = ''
        for r in range(WORLD_SIZE):
            path = osp.join(result_dir, f'rank{r}.err')
            if osp.exists(path):
                with open(path) as f:
                    errs += f'\n--- rank {r} ---\n{f.read()}'
        pytest.fail(f'distributed workers failed: {exc!r}{errs}')
    return [
        torch.load(osp.join(result_dir, f'rank{r}.pt'), weights_only=False)
        for r in range(WORLD_SIZE)
    ]


def _close(a, b, tol=1e-10):
    torch.testing.assert_close(a, b, rtol=tol, atol=tol)


def _case_seed(table, name, base):
    return base + sorted(table).index(name)


# ------------------------------------------------------------- the tests
@pytest.mark.parametrize('name', sorted(LOSS_CASES))
def test_mean_loss_and_grads_equal_single_process(dist_results, name):
    sizes, lam, D, scale, dup = LOSS_CASES[name]
    img_g, txt_g, s = global_batch(sizes, D, scale, dup,
                                   _case_seed(LOSS_CASES, name, 1000))
    loss, g_img, g_txt, g_s = loss_and_grads(CMALoss(lam=lam), img_g, txt_g,
                                             s)
    # the single-process CMALoss is itself the REFERENCE.md formula
    _close(loss, ref_loss(img_g, txt_g, s, lam), 1e-10)

    res = [r['loss'][name] for r in dist_results]
    W = WORLD_SIZE
    _close(sum(r['loss'] for r in res) / W, loss)
    for rank, r in enumerate(res):
        sl = local_slice(sizes, rank)
        assert r['grad_img'].shape == (sizes[rank], D)
        _close(r['grad_img'] / W, g_img[sl])
        _close(r['grad_txt'] / W, g_txt[sl])
    # DDP averages the logit-scale gradient over ranks as well
    _close(sum(r['grad_scale'] for r in res) / W, g_s)

    # the logged parts average to the single-process parts too
    parts = CMALoss(lam=lam)(img_g, txt_g, s, output_dict=True)
    _close(sum(r['contrastive'] for r in res) / W, parts['contrastive'])
    _close(sum(r['alignment'] for r in res) / W, parts['alignment'])


@pytest.mark.parametrize('name', sorted(LOSS_CASES))
def test_local_loss_formulation(dist_results, name):
    """Each rank forms only its B_local x N rows of the logit matrices."""
    sizes, lam, D, scale, dup = LOSS_CASES[name]
    N = sum(sizes)
    for rank, r in enumerate(dist_results):
        res = r['loss'][name]
        b = sizes[rank]
        assert len(res['calls']) == 1, res['calls']
        call = res['calls'][0]
        assert call['image'] == call['text'] == (b, D)
        assert call['all_image'] == call['all_text'] == (N, D)
        assert call['offset'] == sum(sizes[:rank])
        assert call['terms'] == [(b, )] * 4
        # logits = local rows @ global.T are B_local x N; nothing autograd
        # keeps is a full N x N matrix (D != N in every case)
        assert D != N
        if b < N:
            assert (N, N) not in res['saved_shapes'], res['saved_shapes']
        assert (b, N) in res['saved_shapes']
        assert max(torch.Size(sh).numel()
                   for sh in res['saved_shapes']) <= max(b * N, N * D)


@pytest.mark.parametrize('name', sorted(LOSS_CASES))
def test_gather_with_grad_false_is_local_loss(dist_results, name):
    sizes, lam, D, scale, dup = LOSS_CASES[name]
    img_g, txt_g, s = global_batch(sizes, D, scale, dup,
                                   _case_seed(LOSS_CASES, name, 1000))
    for rank, r in enumerate(dist_results):
        res = r['loss'][name]
        sl = local_slice(sizes, rank)
        loss, g_img, g_txt, g_s = loss_and_grads(
            lambda a, b, c: ref_loss(a, b, c, lam), img_g[sl], txt_g[sl], s)
        _close(res['nograd_loss'], loss)
        _close(res['nograd_grad_img'], g_img)
        _close(res['nograd_grad_txt'], g_txt)
        _close(res['nograd_grad_scale'], g_s)


@pytest.mark.parametrize('name', sorted(GATHER_CASES))
@pytest.mark.parametrize('mode', ['auto', 'given'])
def test_gather_with_grad(dist_results, name, mode):
    sizes, tail = GATHER_CASES[name]
    x_g, w = gather_inputs(sizes, tail, _case_seed(GATHER_CASES, name, 2000))
    # loss_r = (r + 1) * sum(gathered * w): d(sum_r loss_r)/dx = sum_r (r+1) w
    coef = sum(r + 1 for r in range(WORLD_SIZE))
    for rank, r in enumerate(dist_results):
        res = r['gather'][name][mode]
        torch.testing.assert_close(res['gathered'], x_g, rtol=0, atol=0)
        sl = local_slice(sizes, rank)
        _close(res['grad'], coef * w[sl], 1e-12)


def test_gather_with_grad_without_process_group_is_identity():
    assert not dist.is_initialized()
    assert get_dist_info() == (0, 1)
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    assert gather_with_grad(x) is x


def test_batch_sizes_bypass_a_gpu_default_group(dist_results):
    """Under a GPU backend (NCCL) CMALoss exchanges the batch sizes through
    its own gloo group, created once, with CPU tensors (no wait for the
    GPU); the embeddings of both towers go through the default group in
    ONE all-gather; the loss is unchanged."""
    sizes = HOST_GROUP_SIZES
    img_g, txt_g, s = global_batch(sizes, 6, 1 / 0.07, False, 3000)
    expected = ref_loss(img_g, txt_g, s, 0.5)
    W = WORLD_SIZE
    res = [r['host_group'] for r in dist_results]
    for key in ('first', 'second'):
        _close(sum(r[key] for r in res) / W, expected)
    for rank, r in enumerate(res):
        assert not r['host_group_is_default']
        assert r['host_group_backend'] == 'gloo'
        assert r['same_group']  # made at the first call only
        assert r['direct'] == [n + 10 for n in sizes]
        # per loss call: sizes on the CPU group, then one gather of the
        # (max batch, 2 D) image|text rows on the default group
        per_call = [
            dict(default=False, dtype=torch.long, device='cpu', shape=(1, )),
            dict(default=True, dtype=torch.float64, device='cpu',
                 shape=(max(sizes), 12)),
        ]
        assert r['calls'] == per_call * 2 + [per_call[0]], r['calls']
