"""FeatureBackbone (issue 16): any timm or mmpretrain model as a frozen
feature extractor. Its features against the libraries' own forwards, its
weights from local files (timm's .safetensors / .pth state dicts,
mmpretrain's .pth checkpoints) with errors naming the file, its
fingerprint, frozen state and scorer rules, and timm's preprocessing as
mmpretrain transforms against timm's own transform."""
import os.path as osp
import sys

import numpy as np
import pytest
import timm
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmpretrain.registry import MODELS, TRANSFORMS
from PIL import Image
from safetensors.torch import save_file

import cma_ood  # noqa: F401  (registers the components)
from cma_ood.models import FeatureBackbone
from cma_ood.models.backbones import (preprocessor_from_data_config,
                                      timm_eval_pipeline)
from cma_ood.utils.feature_file import load_feature_file, save_feature_file

from _helpers import REPO

pytestmark = pytest.mark.usefixtures('single_thread')

TINY_VIT = dict(img_size=32, patch_size=8, depth=2, embed_dim=48,
                num_heads=2)


@pytest.fixture(autouse=True)
def default_scope():
    init_default_scope('mmpretrain')


def timm_ref(seed=0, **kwargs):
    torch.manual_seed(seed)
    return timm.create_model('vit_tiny_patch16_224', pretrained=False,
                             **dict(TINY_VIT, **kwargs)).eval()


def tiny_timm(**kwargs):
    model_kwargs = dict(TINY_VIT, **kwargs.pop('model_kwargs', {}))
    return FeatureBackbone(source='timm', model_name='vit_tiny_patch16_224',
                           model_kwargs=model_kwargs, **kwargs)


def resnet_cfg(head=True, depth=18):
    return dict(
        type='ImageClassifier',
        backbone=dict(type='ResNet', depth=depth, base_channels=8,
                      stem_channels=8),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=6, in_channels=64)
        if head else None)


def images(n=3, seed=0):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(
        seed))


# ------------------------------------------------------------------ timm
def test_timm_features_are_timms_own():
    model = tiny_timm(model_kwargs=dict(num_classes=5))
    ref = timm_ref(num_classes=5)
    ref.load_state_dict(model.net.state_dict())
    x = images()
    with torch.no_grad():
        pre = ref.forward_head(ref.forward_features(x), pre_logits=True)
        logits = ref(x)
        # PLP's construction of a features-only model: num_classes <= 0
        headless = timm_ref(num_classes=0)
        headless.load_state_dict({k: v for k, v in ref.state_dict().items()
                                  if not k.startswith('head.')})
        plp = headless(x)
    torch.testing.assert_close(model.encode_features(x, 'pre_logits'), pre)
    torch.testing.assert_close(model.encode_features(x, 'pre_logits'), plp)
    torch.testing.assert_close(model.encode_features(x, 'logits'), logits)
    # the feature-file kinds name the same features
    torch.testing.assert_close(model.encode_features(x, 'pre_projection'),
                               pre)
    torch.testing.assert_close(model.encode_features(x, 'embedding'), logits)
    torch.testing.assert_close(model(x, mode='tensor'), pre)
    assert model.feature_dim('pre_logits') == 48
    assert model.feature_dim('logits') == 5
    assert model.feature_projection('pre_projection') is None
    assert model.arch == 'timm:vit_tiny_patch16_224'
    # timm's normalisation of the model (its pretrained_cfg: 0.5 / 0.5) on
    # mmpretrain's 0-255 scale, BGR files flipped to RGB
    cfg = ref.pretrained_cfg
    pre_cfg = model.data_preprocessor
    torch.testing.assert_close(
        pre_cfg.mean.flatten(),
        torch.tensor(cfg['mean'], dtype=torch.float32) * 255)
    torch.testing.assert_close(
        pre_cfg.std.flatten(),
        torch.tensor(cfg['std'], dtype=torch.float32) * 255)
    assert pre_cfg.to_rgb
    with pytest.raises(ValueError, match="'pre_logits' or 'logits'"):
        model.encode_features(x, 'tokens')


def test_timm_weights_from_local_files(tmp_path):
    ref = timm_ref(seed=1, num_classes=5)
    state = ref.state_dict()
    st_file = str(tmp_path / 'model.safetensors')
    save_file({k: v.contiguous() for k, v in state.items()}, st_file)
    # a training checkpoint: wrapped, with DDP's prefix
    pth_file = str(tmp_path / 'train.pth')
    torch.save({'state_dict': {f'module.{k}': v for k, v in state.items()},
                'epoch': 3}, pth_file)
    x = images()
    with torch.no_grad():
        pre = ref.forward_head(ref.forward_features(x), pre_logits=True)
        logits = ref(x)
    random_init = tiny_timm(model_kwargs=dict(num_classes=5))
    for path in (st_file, pth_file):
        model = tiny_timm(model_kwargs=dict(num_classes=5), pretrained=path)
        for key, value in state.items():
            assert torch.equal(model.net.state_dict()[key], value), key
        torch.testing.assert_close(model.encode_features(x, 'logits'),
                                   logits)
        assert model.image_fingerprint() != random_init.image_fingerprint()
    # the fingerprint is a function of the weights and the architecture
    assert model.image_fingerprint() == tiny_timm(
        model_kwargs=dict(num_classes=5),
        pretrained=st_file).image_fingerprint()
    # same weights, other features (mean of the tokens): another print
    pooled = tiny_timm(
        model_kwargs=dict(num_classes=5, global_pool='avg', fc_norm=False),
        pretrained=st_file)
    assert not torch.allclose(pooled.encode_features(x), pre)
    assert pooled.image_fingerprint() != model.image_fingerprint()
    # features only (num_classes=0): timm's rule drops the file's classifier
    features_only = tiny_timm(model_kwargs=dict(num_classes=0),
                              pretrained=st_file)
    torch.testing.assert_close(features_only.encode_features(x), pre)
    assert features_only.feature_dim('pre_logits') == 48
    with pytest.raises(ValueError, match='no classifier'):
        features_only.encode_features(x, 'logits')
    # a classifier of another size is a mismatch, not a random head
    with pytest.raises(ValueError, match='shape mismatch') as err:
        tiny_timm(model_kwargs=dict(num_classes=7), pretrained=st_file)
    assert st_file in str(err.value)
    # weights of another architecture: the error names the file and keys
    deeper = str(tmp_path / 'deeper.safetensors')
    save_file(timm_ref(depth=3, num_classes=5).state_dict(), deeper)
    with pytest.raises(ValueError, match='unexpected key') as err:
        tiny_timm(model_kwargs=dict(num_classes=5), pretrained=deeper)
    assert deeper in str(err.value) and 'blocks.2' in str(err.value)
    missing = str(tmp_path / 'nope.safetensors')
    with pytest.raises(FileNotFoundError, match='nope.safetensors'):
        tiny_timm(pretrained=missing)


def test_missing_timm_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, 'timm', None)  # import timm fails
    with pytest.raises(ImportError, match=r'pip install cma_ood\[timm\]'):
        tiny_timm()


# ------------------------------------------------------------ mmpretrain
def test_mmpretrain_classifier_features_and_checkpoints(tmp_path):
    torch.manual_seed(2)
    ref = MODELS.build(resnet_cfg()).eval()
    ckpt = str(tmp_path / 'resnet.pth')
    torch.save({'state_dict': ref.state_dict(),
                'meta': {'epoch': 1, 'dataset_meta': {'classes': ['a']}}},
               ckpt)
    model = FeatureBackbone(source='mmpretrain', model=resnet_cfg(),
                            pretrained=ckpt, input_size=32)
    x = images()
    with torch.no_grad():
        pre = ref.extract_feat(x, stage='pre_logits')
        logits = ref(x, mode='tensor')
    torch.testing.assert_close(model.encode_features(x, 'pre_logits'), pre)
    torch.testing.assert_close(model.encode_features(x, 'logits'), logits)
    assert (model.feature_dim('pre_logits'), model.feature_dim('logits')) \
        == (64, 6)
    assert model.arch == 'mmpretrain:ImageClassifier'
    # without a head: the neck output; the checkpoint's head is ignored
    headless = FeatureBackbone(source='mmpretrain',
                               model=resnet_cfg(head=False), pretrained=ckpt,
                               input_size=32)
    torch.testing.assert_close(headless.encode_features(x), pre)
    # another architecture: an error naming the file
    with pytest.raises(ValueError, match='missing key') as err:
        FeatureBackbone(source='mmpretrain', model=resnet_cfg(depth=34),
                        pretrained=ckpt, input_size=32)
    assert ckpt in str(err.value)
    # a bare backbone is not a classifier
    with pytest.raises(TypeError, match='ImageClassifier'):
        FeatureBackbone(source='mmpretrain',
                        model=dict(type='ResNet', depth=18))


def test_mmpretrain_get_model_and_timm_classifier():
    """A get_model name (mmpretrain's CIFAR ResNet-18: its normalisation,
    RGB arrays not flipped) and a TimmClassifier config (its timm model's
    features)."""
    named = FeatureBackbone(source='mmpretrain',
                            model_name='resnet18_8xb16_cifar10',
                            input_size=32)
    assert named.feature_dim('pre_logits') == 512
    assert named.feature_dim('logits') == 10
    own = named.net.data_preprocessor
    torch.testing.assert_close(named.data_preprocessor.mean, own.mean)
    torch.testing.assert_close(named.data_preprocessor.std, own.std)
    assert not named.data_preprocessor.to_rgb
    wrapped = FeatureBackbone(
        source='mmpretrain',
        model=dict(type='TimmClassifier', model_name='vit_tiny_patch16_224',
                   num_classes=5, **TINY_VIT))
    ref = timm_ref(num_classes=5)
    ref.load_state_dict(wrapped.net.state_dict())
    x = images()
    with torch.no_grad():
        pre = ref.forward_head(ref.forward_features(x), pre_logits=True)
    torch.testing.assert_close(wrapped.encode_features(x), pre)


# ------------------------------------------------ frozen model, scorers
def test_frozen_and_not_trainable():
    model = tiny_timm()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert not any(p.requires_grad for p in model.parameters())
    model.train()
    assert not model.net.training  # no dropout, fixed norm statistics
    model.init_weights()  # MMEngine's initialisation would redraw them
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    with pytest.raises(RuntimeError, match='frozen feature extractor'):
        model(images(), [], mode='loss')


def test_scorer_rules():
    with pytest.raises(ValueError, match='MCMScorer needs a CLIP'):
        tiny_timm(ood_scorers=[dict(type='MCMScorer')])
    with pytest.raises(ValueError, match='has no classifier'):
        tiny_timm(model_kwargs=dict(num_classes=0),
                  ood_scorers=[dict(type='MSPScorer')])
    with pytest.raises(ValueError, match="predict_with='head'"):
        tiny_timm(model_kwargs=dict(num_classes=0), predict_with='head')
    with pytest.raises(ValueError, match="feature='logits' needs"):
        tiny_timm(model_kwargs=dict(num_classes=0), feature='logits')


def test_scorers_must_be_fitted_on_the_scored_feature(tmp_path):
    """A scorer fitted on pre-logits refuses a backbone that scores its
    logits (here of the same size, so only the kind tells them apart)."""
    path = str(tmp_path / 'pre.pt')
    save_feature_file(path, dict(
        feats=torch.randn(8, 48), projection=None,
        labels=torch.arange(8) % 2, sources=torch.zeros(8, dtype=torch.long),
        source_names=['data'], pseudo_labels=None, zero_shot_weights=None,
        classnames=None,
        meta=dict(cache_key='x', image_encoder_sha256='0' * 64,
                  feature='pre_projection')))
    knn = dict(type='KNNScorer', train_features=path, check_encoder=False)
    model = tiny_timm(model_kwargs=dict(num_classes=48), feature='logits',
                      ood_scorers=[knn])
    with pytest.raises(ValueError, match="fitted on pre_projection"):
        model.prepare_scorers()
    model = tiny_timm(model_kwargs=dict(num_classes=48), ood_scorers=[knn])
    model.prepare_scorers()
    x = images(2)
    score = torch.tensor([ds.ood_scores['kNN'] for ds in model(
        x, mode='predict')])
    feats = torch.nn.functional.normalize(model.encode_features(x), dim=-1)
    train = torch.nn.functional.normalize(
        load_feature_file(path)['feats'], dim=-1)
    torch.testing.assert_close(score, (feats @ train.T).max(1).values)


def test_logit_scores_and_predictions_of_a_classifier():
    """The classifier baselines from a FeatureBackbone: MSP and energy of
    its logits, ID predictions from its head."""
    model = tiny_timm(model_kwargs=dict(num_classes=5),
                      ood_scorers=[dict(type='MSPScorer'),
                                   dict(type='EnergyScorer')])
    x = images(4)
    samples = model(x, mode='predict')
    ref = timm_ref(num_classes=5)
    ref.load_state_dict(model.net.state_dict())
    with torch.no_grad():
        logits = ref(x).double()
    msp = logits.softmax(-1).max(-1).values
    energy = torch.logsumexp(logits, -1)
    for i, ds in enumerate(samples):
        assert ds.ood_scores['MSP'] == pytest.approx(float(msp[i]), 1e-5)
        assert ds.ood_scores['Energy'] == pytest.approx(float(energy[i]),
                                                        1e-5)
        assert int(ds.pred_label) == int(logits[i].argmax())


# --------------------------------------------------------- preprocessing
def _timm_crop(transform, img):
    """timm's eval transform up to the crop (before ToTensor/Normalize)."""
    for step in transform.transforms:
        if type(step).__name__ in ('MaybeToTensor', 'ToTensor'):
            break
        img = step(img)
    return np.asarray(img)


@pytest.mark.parametrize('mode', ['center', 'squash'])
def test_timm_eval_pipeline_matches_timms_transform(mode):
    from timm.data import create_transform, resolve_data_config
    from timm.models import get_pretrained_cfg
    pretrained = get_pretrained_cfg(
        'vit_base_patch16_224.augreg_in21k').to_dict()
    data_cfg = resolve_data_config({}, pretrained_cfg=pretrained)
    data_cfg['crop_mode'] = mode
    pipeline = timm_eval_pipeline(data_cfg, load=False)
    if mode == 'center':
        # the shipped base config writes this pipeline out
        base = Config.fromfile(osp.join(
            REPO, 'configs/_base_/datasets/pipelines/timm_vit-in21k.py'))
        assert base.timm_test_pipeline[1:] == pipeline
        assert pipeline[0]['scale'] == 248  # floor(224 / 0.9)
    rgb = np.random.default_rng(0).integers(0, 256, (301, 257, 3),
                                            dtype=np.uint8)
    results = dict(img=rgb[..., ::-1].copy())  # mmpretrain's BGR arrays
    for step in pipeline[:-1]:
        results = TRANSFORMS.build(step)(results)
    ours = results['img'][..., ::-1]
    theirs = _timm_crop(create_transform(**data_cfg),
                        Image.fromarray(rgb))
    assert ours.shape == theirs.shape == (224, 224, 3)
    np.testing.assert_array_equal(ours, theirs)
    assert preprocessor_from_data_config(data_cfg) == dict(
        mean=[127.5] * 3, std=[127.5] * 3)
