"""GLMCMScorer and glmcm_score: the published formula (GL-MCM's
utils/detection_util.py) through the classifier, with both image towers,
and the config."""
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.config import Config

import cma_ood  # noqa: F401
from _helpers import REPO
from cma_ood.models import MultiModalClassifier
from cma_ood.models.multimodal.clip_resnet import (AttnPoolTap,
                                                   encode_image_local_resnet,
                                                   resnet_local_features,
                                                   resnet_pooled_embedding)
from cma_ood.models.multimodal.clip_vision import encode_image_local_vit
from cma_ood.models.ood_scorers.functional.glmcm import (glmcm_score,
                                                         local_mcm_score)

pytestmark = pytest.mark.usefixtures('single_thread')
CLASSNAMES = ['cat', 'dog', 'car', 'tree', 'house']


def np_softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def published_glmcm(global_cos, local_cos, T, lam):
    """GL-MCM's get_ood_scores_clip ('GL-MCM'), sign flipped back:
    max softmax(global / T) + lam * max over grid and classes of the
    per-patch softmax(local / T)."""
    g = np_softmax(global_cos / T, 1).max(axis=1)
    loc = np_softmax(local_cos / T, -1).max(axis=(1, 2))
    return g + lam * loc


def test_glmcm_score_is_the_published_formula():
    rng = np.random.default_rng(0)
    cos = rng.uniform(-1, 1, (4, 6))
    local = rng.uniform(-1, 1, (4, 9, 6))
    for T, lam in ((1.0, 0.5), (0.1, 1.0)):
        got = glmcm_score(torch.tensor(cos), torch.tensor(local), T, lam)
        np.testing.assert_allclose(got.numpy(),
                                   published_glmcm(cos, local, T, lam),
                                   rtol=1e-12)
    np.testing.assert_allclose(
        local_mcm_score(torch.tensor(local)).numpy(),
        np_softmax(local, -1).max(axis=(1, 2)), rtol=1e-12)
    with pytest.raises(ValueError, match='local_sim'):
        local_mcm_score(torch.zeros(4, 6))
    with pytest.raises(ValueError, match='cos_sim'):
        glmcm_score(torch.zeros(4, 5), torch.zeros(4, 9, 6))


def assert_published_scores(clf, images, glob, local):
    """The classifier's GL-MCM (lambda 0.5, T = 1, return_parts) of
    ``images`` is the published formula on ``glob`` / ``local`` and equals
    G + 0.5 L; returns the (B, 2) parts."""
    out = clf.predict(images)
    text = clf.class_embeddings()
    want = published_glmcm((glob @ text.T).numpy().astype(np.float64),
                           (local @ text.T).numpy().astype(np.float64),
                           1.0, 0.5)
    got = np.array([ds.ood_scores['GL-MCM'] for ds in out])
    np.testing.assert_allclose(got, want, rtol=1e-5)
    parts = np.array([[ds.ood_scores['GL-MCM.global'],
                       ds.ood_scores['GL-MCM.local']] for ds in out])
    np.testing.assert_allclose(parts[:, 0] + 0.5 * parts[:, 1], got,
                               rtol=1e-6)
    return parts


@pytest.mark.parametrize('fast', [True, False])
@torch.no_grad()
def test_scorer_in_the_classifier_matches_the_formula(fast):
    torch.manual_seed(0)
    clf = MultiModalClassifier(
        arch='tiny-vit-32px', pretrained=None, classnames=CLASSNAMES,
        fast_image_tower=fast,
        ood_scorers=[dict(type='GLMCMScorer', lambda_local=0.5,
                          return_parts=True, chunk_size=2)]).eval()
    images = torch.randn(5, 3, 32, 32)
    glob, local = encode_image_local_vit(clf.clip.visual, images, fast=True)
    assert_published_scores(clf, images, glob, local)


def resnet_classifier(**scorer):
    """The tiny ResNet CLIP with its image tower rebuilt for 64 px inputs:
    a 2 x 2 grid of local features (32 px gives one position)."""
    from clip.model import ModifiedResNet
    torch.manual_seed(0)
    clf = MultiModalClassifier(
        arch='tiny-rn-32px', pretrained=None, classnames=CLASSNAMES,
        ood_scorers=[dict(type='GLMCMScorer', **scorer)])
    clf.clip.visual = ModifiedResNet(layers=(1, 1, 1, 1), output_dim=64,
                                     heads=8, input_resolution=64, width=16)
    return clf.eval()


@torch.no_grad()
def test_resnet_local_features_are_the_published_value_path():
    """GL-MCM's AttentionPool2d.forward: x_local = c_proj(v_proj(x)) of
    each position of the pool's input, no positional embedding, here in
    float64 numpy; the map captured in the tower's forward also gives back
    the tower's own output through the pool."""
    visual = resnet_classifier().clip.visual
    images = torch.randn(3, 3, 64, 64)
    tap = AttnPoolTap(visual)
    glob = visual(images)
    tap.remove()
    fmap = tap.value
    assert fmap.shape == (3, 512, 2, 2) and tap.step == 1
    pool = visual.attnpool
    x = fmap.double().numpy().transpose(0, 2, 3, 1)  # (B, h, w, C)
    v = x @ pool.v_proj.weight.double().numpy().T + \
        pool.v_proj.bias.double().numpy()
    want = v @ pool.c_proj.weight.double().numpy().T + \
        pool.c_proj.bias.double().numpy()
    want = want.reshape(3, 4, 64)
    raw = resnet_local_features(visual, fmap, normalize=False)
    np.testing.assert_allclose(raw.double().numpy(), want, rtol=1e-4,
                               atol=1e-5)
    unit = resnet_local_features(visual, fmap)
    np.testing.assert_allclose(
        unit.double().numpy(),
        want / np.linalg.norm(want, axis=-1, keepdims=True), rtol=1e-4,
        atol=1e-6)
    torch.testing.assert_close(resnet_pooled_embedding(visual, fmap), glob)
    g, loc = encode_image_local_resnet(visual, images)
    torch.testing.assert_close(g, torch.nn.functional.normalize(glob, dim=-1))
    torch.testing.assert_close(loc, unit)
    with pytest.raises(ValueError, match=r'\(B, C, h, w\) input of the '
                       'attention pool with C = 512'):
        resnet_local_features(visual, fmap[:, :64])


@torch.no_grad()
def test_scorer_with_a_resnet_tower_matches_the_formula():
    clf = resnet_classifier(lambda_local=0.5, return_parts=True,
                            chunk_size=2)
    images = torch.randn(5, 3, 64, 64)
    glob, local = encode_image_local_resnet(clf.clip.visual, images)
    parts = assert_published_scores(clf, images, glob, local)
    # L: the largest per-position softmax over 5 classes, in (1/5, 1]
    assert (parts[:, 1] > 1 / 5).all() and (parts[:, 1] <= 1).all()
    # preparing again (new weights) keeps one hook on the pool
    clf.prepare_scorers()
    clf.prepare_scorers()
    assert len(clf.clip.visual.attnpool._forward_pre_hooks) == 1


@torch.no_grad()
def test_errors_name_the_problem():
    clf = resnet_classifier()
    clf.clip.visual = torch.nn.Identity()
    with pytest.raises(ValueError, match='needs an openai-clip ViT or ResNet '
                       'image tower .*got Identity'):
        clf.prepare_scorers()
    clf = MultiModalClassifier(arch='tiny-vit-32px', pretrained=None,
                               classnames=CLASSNAMES,
                               ood_scorers=[dict(type='GLMCMScorer')]).eval()
    clf.prepare_scorers()
    scorer = clf.ood_scorers[0]
    emb = torch.nn.functional.normalize(torch.randn(3, 64), dim=-1)
    with pytest.raises(RuntimeError, match='not captured'):
        scorer(emb, emb @ clf.class_embeddings().T, clf.logit_scale())
    clf.clip.visual(torch.randn(3, 3, 32, 32))  # tokens of other images
    with pytest.raises(RuntimeError, match='do not belong'):
        scorer(emb, emb @ clf.class_embeddings().T, clf.logit_scale())
    with pytest.raises(ValueError, match='temperature'):
        MultiModalClassifier(arch='tiny-vit-32px', pretrained=None,
                             classnames=CLASSNAMES,
                             ood_scorers=[dict(type='GLMCMScorer',
                                               temperature=0)])


def test_imagenet_config_follows_the_published_script():
    """scripts/eval_imagenet.sh: --score GL-MCM --lambda_local 0.5, T = 1;
    MCM's prompt and preprocessing (Resize(224) + CenterCrop(224))."""
    cfg = Config.fromfile(osp.join(
        REPO, 'configs/gl-mcm/gl-mcm_clip-vit-b16_1xb256_in1k-mos.py'))
    assert cfg.model.test_template == 'a photo of a {}'
    assert [s['type'] for s in cfg.model.ood_scorers] == ['GLMCMScorer',
                                                          'MCMScorer']
    scorer = cfg.model.ood_scorers[0]
    assert scorer['lambda_local'] == 0.5 and scorer['temperature'] == 1.0
    mcm = Config.fromfile(osp.join(
        REPO, 'configs/mcm/mcm_clip-vit-b16_1xb256_in1k-mos.py'))
    assert cfg.test_dataloader.dataset.pipeline == \
        mcm.test_dataloader.dataset.pipeline
    assert cfg.test_evaluator == mcm.test_evaluator
