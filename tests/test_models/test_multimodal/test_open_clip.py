"""open_clip as a second CLIP source: names, weights, tokenizer, the
classifier's modes, fine-tuning and pre-projection features, against
open_clip's own forwards."""
import sys

import clip
import open_clip
import pytest
import torch
import torch.nn.functional as F
from mmengine.hooks import Hook
from mmpretrain.structures import DataSample

import cma_ood  # noqa: F401  (registers components)
from cma_ood.models import MultiModalClassifier
from cma_ood.models.multimodal.clip_builder import build_clip, cached_tokenize
from cma_ood.models.multimodal.clip_vision import (FeatureTap,
                                                   encode_image_features,
                                                   image_feature_dim,
                                                   projection_matrix)
from cma_ood.models.multimodal.open_clip_builder import (
    TINY_OPEN_CLIP_CONFIGS, build_open_clip, open_clip_tokenizer,
    parse_open_clip_arch)
from cma_ood.models.utils.fingerprint import (image_tower_sha256,
                                              text_tower_sha256)

ARCH = 'open_clip:tiny-vit-32px'
CLASSES = ['circle', 'square', 'triangle', 'star']


def make_model(**kwargs):
    torch.manual_seed(0)
    cfg = dict(arch=ARCH, classnames=CLASSES,
               ood_scorers=[dict(type='MCMScorer'), dict(type='MSPScorer')])
    cfg.update(kwargs)
    return MultiModalClassifier(**cfg)


def images(n, seed=0, size=32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g)


def test_names_parse_and_bad_names_are_explained():
    assert parse_open_clip_arch('open_clip:ViT-L-14/laion2b_s32b_b82k') == (
        'ViT-L-14', 'laion2b_s32b_b82k')
    assert parse_open_clip_arch('open_clip:ViT-B-16') == ('ViT-B-16', None)
    for bad in ('open_clip:', 'open_clip:ViT-B-16/', 'open_clip:a/b/c'):
        with pytest.raises(ValueError, match='open_clip:MODEL/TAG'):
            parse_open_clip_arch(bad)
    with pytest.raises(KeyError, match='open_clip.list_models'):
        build_clip('open_clip:ViT-Q-99')
    with pytest.raises(KeyError, match='available tags'):
        build_clip('open_clip:ViT-B-16/no_such_tag')


def test_tag_download_failure_names_the_file(monkeypatch):
    def offline(*args, **kwargs):
        raise OSError('Network is unreachable')

    monkeypatch.setattr(open_clip, 'create_model', offline)
    with pytest.raises(OSError) as err:
        build_clip('open_clip:ViT-B-16/laion2b_s34b_b88k')
    msg = str(err.value)
    assert 'Network is unreachable' in msg
    assert ('huggingface.co/laion/CLIP-ViT-B-16-laion2B-s34B-b88K/resolve/'
            'main/open_clip_pytorch_model.bin') in msg
    assert 'model.pretrained=' in msg


def test_missing_open_clip_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, 'open_clip', None)
    with pytest.raises(ImportError, match=r'cma_ood\[open_clip\]'):
        build_clip(ARCH)


@pytest.mark.parametrize('suffix', ['.pth', '.safetensors'])
def test_local_weights_load_exactly_and_mismatches_name_the_file(
        tmp_path, suffix):
    torch.manual_seed(1)
    source = build_open_clip(ARCH)
    path = str(tmp_path / f'weights{suffix}')
    if suffix == '.safetensors':
        from safetensors.torch import save_file
        save_file({k: v.contiguous()
                   for k, v in source.state_dict().items()}, path)
    else:  # a training checkpoint's wrapper and DDP prefix
        torch.save({'state_dict': {f'module.{k}': v for k, v in
                                   source.state_dict().items()}}, path)
    torch.manual_seed(2)
    loaded = build_clip(ARCH, pretrained=path)
    for key, value in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    other = str(tmp_path / 'other.pth')
    torch.save({'visual.proj': torch.zeros(3, 3)}, other)
    with pytest.raises(RuntimeError, match='other.pth does not match'):
        build_clip(ARCH, pretrained=other)


def test_tokenizer_is_the_models_own_and_rejects_long_prompts(tmp_path):
    texts = ['a photo of a dog', 'the nice café', 'This is a shiny photo']
    # ViT-B-16 uses OpenAI's BPE: the ids equal clip.tokenize's
    tok = open_clip_tokenizer('open_clip:ViT-B-16', 77)
    assert torch.equal(tok(texts), clip.tokenize(texts))
    tiny = open_clip_tokenizer(ARCH, 24)
    assert torch.equal(tiny(texts), clip.tokenize(texts, 24))
    with pytest.raises(ValueError, match='context length 24'):
        tiny(['word ' * 30])
    # the token cache keeps openai-clip's and open_clip's ids apart
    cached_tokenize(texts, 24, tmp_path)
    cached_tokenize(texts, 24, tmp_path, tokenizer=tiny)
    assert len(list(tmp_path.glob('tokens-*.pt'))) == 2


def test_classifier_modes_match_open_clip_forwards():
    model = make_model(test_template='the nice {}').eval()
    assert not model.truncate_text and not model.fast_image_tower
    x = images(5, seed=3)
    samples = model(x, [DataSample() for _ in range(5)], mode='predict')
    logits = model(x, mode='tensor')
    oc = model.clip
    with torch.no_grad():
        img = F.normalize(oc.encode_image(x), dim=-1)
        txt = F.normalize(oc.encode_text(open_clip.SimpleTokenizer(
            context_length=24)([f'the nice {c}' for c in CLASSES])), dim=-1)
        scale = oc.logit_scale.exp()
    cos = img @ txt.T
    torch.testing.assert_close(logits, scale * cos, rtol=1e-5, atol=1e-5)
    for i, ds in enumerate(samples):
        mcm = (cos[i] / 1.0).softmax(-1).max()
        assert ds.ood_scores['MCM'] == pytest.approx(float(mcm), abs=1e-5)
        assert int(ds.pred_label) == int(cos[i].argmax())


def test_cma_fine_tuning_decreases_the_loss_and_trains_both_towers():
    model = make_model(loss=dict(type='CMALoss', lam=0.001)).train()
    x = images(16, seed=5)
    samples = [DataSample().set_gt_label(i % 4) for i in range(16)]
    before = {k: v.clone() for k, v in model.clip.state_dict().items()}
    optim = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(8):
        loss = model(x, samples, mode='loss')['loss']
        optim.zero_grad()
        loss.backward()
        optim.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0], losses
    after = model.clip.state_dict()
    for key in ('visual.proj', 'text_projection', 'token_embedding.weight'):
        assert not torch.equal(before[key], after[key]), key


def test_freeze_text_freezes_the_open_clip_text_tower():
    model = make_model(freeze_text=True)
    frozen = {n for n, p in model.clip.named_parameters()
              if not p.requires_grad}
    assert {'token_embedding.weight', 'positional_embedding',
            'text_projection', 'ln_final.weight', 'logit_scale'} <= frozen
    assert any(n.startswith('transformer.') for n in frozen)
    assert not any(n.startswith('visual.') for n in frozen)
    # the fingerprints follow the towers they name
    text, image = text_tower_sha256(model.clip), image_tower_sha256(
        model.clip)
    with torch.no_grad():
        model.clip.transformer.resblocks[0].mlp.c_fc.bias.add_(1)
    assert text_tower_sha256(model.clip) != text
    assert image_tower_sha256(model.clip) == image


def _timm_clip():
    torch.manual_seed(0)
    return open_clip.CLIP(
        embed_dim=64,
        vision_cfg=dict(timm_model_name='resnet18', timm_pool='avg',
                        timm_proj='linear', image_size=32),
        text_cfg=TINY_OPEN_CLIP_CONFIGS['tiny-vit-32px']['text_cfg']).eval()


@pytest.mark.parametrize('tower', ['vit', 'timm'])
def test_pre_projection_features_project_to_the_embedding(tower):
    oc = build_open_clip(ARCH).eval() if tower == 'vit' else _timm_clip()
    x = images(3, seed=7)
    with torch.no_grad():
        pre = encode_image_features(oc, x, 'pre_projection')
        emb = encode_image_features(oc, x, 'embedding')
        torch.testing.assert_close(emb, oc.encode_image(x))
        proj = projection_matrix(oc.visual)
        torch.testing.assert_close(pre @ proj, emb, rtol=1e-5, atol=1e-5)
        assert pre.shape == (3, image_feature_dim(oc.visual,
                                                  'pre_projection'))
        # the tap of a classifier's forward captures the same features
        tap = FeatureTap(oc.visual)
        oc.encode_image(x)
        tap.remove()
    torch.testing.assert_close(tap.value, pre)
    if tower == 'vit':  # open_clip's ViT: ln_post then the class token
        with torch.no_grad():
            v = oc.visual
            tokens = v.transformer(v._embeds(x))
            torch.testing.assert_close(pre, v.ln_post(tokens)[:, 0])


def test_zero_shot_neglabel_and_training_from_the_demo_config(tmp_path):
    """The demo config with model.arch='open_clip:tiny-vit-32px' through
    MMEngine's Runner: a short CMA training run lowers the loss, and the
    zero-shot test scores NegLabel (mined with the open_clip tokenizer and
    text tower) and MCM into one OoD table."""
    from mmengine.runner import Runner

    from _helpers import small_cfg
    txt = tmp_path / 'txt'
    txt.mkdir()
    (txt / 'noun.artifact.txt').write_text(
        'table\nriver\nengine\nviolin\ncloud\nladder\nbridge\npencil\n')
    (txt / 'adj.all.txt').write_text('wooden\nshiny\nancient\ntiny\n')
    cfg = small_cfg(tmp_path / 'work', max_epochs=3, num_per_class=8)
    cfg.model.arch = ARCH
    cfg.model.ood_scorers = [
        dict(type='NegLabelScorer', txt_dir=str(txt),
             lexnames=['noun.artifact', 'adj.all'], ratio=0.5, ngroup=2,
             cache_dir=str(tmp_path / 'cache')),
        dict(type='MCMScorer')]
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=10)
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    cfg.train_cfg.pop('val_interval', None)
    cfg.train_cfg.val_begin = 10**6
    runner = Runner.from_cfg(cfg)
    assert runner.model.clip.__class__.__module__ == 'open_clip.model'
    losses = []
    runner.register_hook(_LossRecorder(losses), priority='LOWEST')
    runner.train()
    per_epoch = len(losses) // 3
    assert sum(losses[-per_epoch:]) < sum(losses[:per_epoch])
    metrics = runner.test()
    for score in ('NegLabel', 'MCM'):
        for name in ('unseen_shapes', 'mean'):
            assert 0 <= metrics[f'ood/{score}/{name}/AUROC'] <= 100
    scorer = runner.model.ood_scorers[0]
    # mined with the model's tokenizer: the mined negatives are candidates
    assert set(scorer.neg_labels) <= {
        'table', 'river', 'engine', 'violin', 'cloud', 'ladder', 'bridge',
        'pencil', 'wooden', 'shiny', 'ancient', 'tiny'}


class _LossRecorder(Hook):
    def __init__(self, losses):
        self.losses = losses

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        self.losses.append(outputs['loss'].item())


def test_tools_test_warns_about_random_weights_only_without_a_tag():
    import importlib.util
    import os.path as osp

    from _helpers import REPO
    spec = importlib.util.spec_from_file_location(
        'cma_ood_tools_test', osp.join(REPO, 'tools', 'test.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.is_random_init(dict(arch='ViT-B/16', pretrained=None))
    assert not tool.is_random_init(dict(arch='ViT-B/16', pretrained='openai'))
    assert tool.is_random_init(dict(arch=ARCH, pretrained=None))
    # a tag names the weights open_clip downloads
    assert not tool.is_random_init(
        dict(arch='open_clip:ViT-B-16/laion2b_s34b_b88k', pretrained=None))
    assert not tool.is_random_init(dict(type='OoDImageClassifier'))
