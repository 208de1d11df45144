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
    out = clf.predict(images)
    text = clf.class_embeddings()
    glob, local = encode_image_local_vit(clf.clip.visual, images, fast=True)
    want = published_glmcm((glob @ text.T).numpy().astype(np.float64),
                           (local @ text.T).numpy().astype(np.float64),
                           1.0, 0.5)
    got = np.array([ds.ood_scores['GL-MCM'] for ds in out])
    np.testing.assert_allclose(got, want, rtol=1e-5)
    parts = np.array([[ds.ood_scores['GL-MCM.global'],
                       ds.ood_scores['GL-MCM.local']] for ds in out])
    np.testing.assert_allclose(parts[:, 0] + 0.5 * parts[:, 1], got,
                               rtol=1e-6)


@torch.no_grad()
def test_errors_name_the_problem():
    clf = MultiModalClassifier(arch='tiny-rn-32px', pretrained=None,
                               classnames=CLASSNAMES,
                               ood_scorers=[dict(type='GLMCMScorer')]).eval()
    with pytest.raises(ValueError, match='ViT image tower.*ModifiedResNet'):
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
