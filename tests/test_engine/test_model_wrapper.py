"""CompiledDistributedDataParallel: the config's DDP wrapper traces the
compiled encoders without Dynamo's DDPOptimizer, and only in train_step."""
import os.path as osp

import pytest
import torch
import torch._dynamo
import torch.distributed as dist
import torch.nn as nn
from mmengine.config import Config
from mmengine.model import BaseModel
from mmengine.optim import OptimWrapper
from mmpretrain.registry import MODEL_WRAPPERS

import cma_ood  # noqa: F401  (registers components)
from cma_ood.engine import CompiledDistributedDataParallel
from _helpers import REPO


class Recorder(BaseModel):
    """Records Dynamo's optimize_ddp setting whenever it runs forward."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3, 2)
        self.seen = []

    def forward(self, inputs, data_samples=None, mode='tensor'):
        self.seen.append(torch._dynamo.config.optimize_ddp)
        out = self.linear(inputs)
        if mode == 'loss':
            return dict(loss=out.square().mean())
        return [out]


@pytest.fixture
def world_of_one(tmp_path):
    """A one-process gloo group (DDP needs one), destroyed afterwards."""
    assert not dist.is_initialized()
    dist.init_process_group('gloo', init_method=f'file://{tmp_path}/store',
                            rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def build(**kwargs):
    torch.manual_seed(0)
    model = Recorder()
    cfg = dict(type='CompiledDistributedDataParallel', module=model,
               broadcast_buffers=False, **kwargs)
    return MODEL_WRAPPERS.build(cfg), model


@pytest.mark.usefixtures('world_of_one')
@pytest.mark.parametrize('optimize_ddp', [False, True])
def test_train_step_sets_optimize_ddp_and_restores_it(optimize_ddp):
    before = torch._dynamo.config.optimize_ddp
    wrapper, model = build(optimize_ddp=optimize_ddp)
    assert isinstance(wrapper, CompiledDistributedDataParallel)
    optim = OptimWrapper(torch.optim.SGD(wrapper.parameters(), lr=0.1))
    data = dict(inputs=torch.randn(4, 3))
    wrapper.train_step(data, optim)
    assert model.seen == [optimize_ddp]
    assert torch._dynamo.config.optimize_ddp == before
    # evaluation runs with the process-wide setting
    wrapper.val_step(data)
    assert model.seen == [optimize_ddp, before]


@pytest.mark.usefixtures('world_of_one')
def test_step_equals_plain_sgd_step():
    wrapper, model = build()
    torch.manual_seed(1)
    plain = Recorder()
    plain.load_state_dict(model.state_dict())
    data = dict(inputs=torch.randn(5, 3))
    wrapper.train_step(data,
                       OptimWrapper(torch.optim.SGD(wrapper.parameters(),
                                                    lr=0.1)))
    plain.train_step(data,
                     OptimWrapper(torch.optim.SGD(plain.parameters(), lr=0.1)))
    for a, b in zip(model.parameters(), plain.parameters()):
        torch.testing.assert_close(a, b)


def test_optimize_ddp_must_be_a_bool():
    with pytest.raises(TypeError, match='optimize_ddp must be True or False'):
        CompiledDistributedDataParallel(Recorder(), optimize_ddp='python_reducer')


def test_runtime_config_uses_it():
    cfg = Config.fromfile(
        osp.join(REPO, 'configs', 'cma', 'cma_clip-vit-b16_4xb128_in1k.py'))
    assert cfg.model_wrapper_cfg == dict(
        type='CompiledDistributedDataParallel', broadcast_buffers=False,
        optimize_ddp=False)
