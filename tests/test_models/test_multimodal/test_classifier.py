"""MultiModalClassifier: the three modes against direct computations."""
import pytest
import torch
import torch.nn.functional as F
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

import cma_ood  # noqa: F401  (registers components)
from cma_ood.models import MultiModalClassifier, cma_loss
from cma_ood.models.ood_scorers import BaseOoDScorer, ScorerOutput
from cma_ood.models.multimodal.clip_builder import tokenize

CLASSES = ['circle', 'square', 'triangle', 'star']


def make_model(**kwargs):
    torch.manual_seed(0)
    cfg = dict(
        arch='tiny-vit-32px',
        classnames=CLASSES,
        ood_scorers=[
            dict(type='MCMScorer', temperature=0.01),
            dict(type='MSPScorer'),
            dict(type='MaxLogitScorer'),
            dict(type='EnergyScorer', temperature=2.0)
        ])
    cfg.update(kwargs)
    return MultiModalClassifier(**cfg)


def batch(model, labels, seed=0):
    g = torch.Generator().manual_seed(seed)
    imgs = [
        torch.randint(0, 256, (3, 32, 32), generator=g, dtype=torch.uint8)
        for _ in labels
    ]
    samples = [DataSample().set_gt_label(int(y)) for y in labels]
    return model.data_preprocessor(
        dict(inputs=imgs, data_samples=samples), training=True)


def test_preprocessor_uses_clip_normalisation():
    model = make_model()
    img = torch.full((3, 32, 32), 200, dtype=torch.uint8)
    img[0] = 10  # BGR input: channel 0 is blue
    out = model.data_preprocessor(dict(inputs=[img]), False)['inputs'][0]
    # to_rgb: output channel 2 is the input's channel 0 (blue)
    assert torch.allclose(out[2], torch.full((32, 32),
                                             (10 - 104.09373615) /
                                             70.32316305))
    assert torch.allclose(out[0], torch.full((32, 32),
                                             (200 - 122.770938) /
                                             68.5005327))


def test_loss_equals_cma_on_per_sample_prompts():
    model = make_model(loss=dict(type='CMALoss', lam=0.3))
    labels = [0, 2, 2, 1, 3, 0, 2]
    data = batch(model, labels)
    out = model(data['inputs'], data['data_samples'], mode='loss')
    assert set(out) == {'loss', 'contrastive', 'alignment', 'logit_scale'}
    # independent path: encode every sample's own prompt
    tokens = tokenize([f'a photo of a {CLASSES[y]}' for y in labels],
                      model.context_length)
    img = model.clip.encode_image(data['inputs'])
    txt = model.clip.encode_text(tokens)
    scale = model.clip.logit_scale.exp()
    expected = cma_loss(img, txt, scale, lam=0.3)
    torch.testing.assert_close(out['loss'], expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out['loss'],
                               out['contrastive'] + 0.3 * out['alignment'],
                               rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out['logit_scale'], scale.detach())


def test_training_prompts_are_encoded_padded_with_the_same_loss():
    """train_prompt_multiple=8: 5 distinct classes of 20 are encoded as 8
    prompts (capped at the class count: 20 distinct stay 20); the loss and
    every gradient are those of the unpadded batch."""
    names = [f'shape number {i}' for i in range(20)]
    runs = {}
    for multiple in (1, 8):
        model = make_model(classnames=names, train_prompt_multiple=multiple,
                           loss=dict(type='CMALoss', lam=0.3))
        rows = []
        model.clip.token_embedding.register_forward_pre_hook(
            lambda m, args: rows.append(args[0].shape[0]))
        data = batch(model, [3, 7, 7, 0, 19, 3, 12])
        out = model(data['inputs'], data['data_samples'], mode='loss')
        out['loss'].backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters()
                 if p.grad is not None}
        data = batch(model, list(range(20)) * 2)
        model(data['inputs'], data['data_samples'], mode='loss')
        runs[multiple] = (rows, out, grads)
    (rows1, out1, grads1), (rows8, out8, grads8) = runs[1], runs[8]
    assert rows1 == [5, 20] and rows8 == [8, 20]
    for key in out1:
        torch.testing.assert_close(out8[key], out1[key], rtol=1e-6,
                                   atol=1e-7)
    assert grads8.keys() == grads1.keys() and len(grads1) > 10
    for name in grads1:
        # fp32 rounding of other matrix shapes: 1e-6 of each tensor's scale
        scale = float(grads1[name].abs().max())
        torch.testing.assert_close(grads8[name], grads1[name], rtol=0,
                                   atol=1e-6 * scale, msg=name)
    with pytest.raises(ValueError, match='train_prompt_multiple must be a '
                       'positive int, got 0'):
        make_model(train_prompt_multiple=0)


def test_loss_gradients_reach_both_towers_and_logit_scale():
    model = make_model()
    data = batch(model, [0, 1, 2, 3])
    model(data['inputs'], data['data_samples'], mode='loss')['loss'].backward()
    assert model.clip.visual.conv1.weight.grad.abs().sum() > 0
    assert model.clip.token_embedding.weight.grad.abs().sum() > 0
    assert model.clip.logit_scale.grad is not None


@pytest.mark.parametrize('frozen', ['image', 'text'])
def test_freeze_options(frozen):
    model = make_model(**{f'freeze_{frozen}': True})
    data = batch(model, [0, 1, 2, 3])
    model.train()
    model(data['inputs'], data['data_samples'], mode='loss')['loss'].backward()
    visual_grads = [p.grad for p in model.clip.visual.parameters()]
    text_grads = [
        p.grad for p in model.clip.transformer.parameters()
    ] + [model.clip.token_embedding.weight.grad]
    if frozen == 'image':
        assert all(g is None for g in visual_grads)
        assert all(not p.requires_grad for p in model.clip.visual.parameters())
        assert not model.clip.visual.training
        assert any(g is not None and g.abs().sum() > 0 for g in text_grads)
    else:
        assert all(g is None for g in text_grads)
        assert model.clip.logit_scale.grad is None
        assert any(g is not None and g.abs().sum() > 0 for g in visual_grads)


def test_predict_and_tensor_modes_match_zero_shot_formulas():
    model = make_model(test_template='the nice {}').eval()
    data = batch(model, [0, 1, 2, 3, 1], seed=3)
    inputs = data['inputs']
    results = model(inputs, data['data_samples'], mode='predict')
    logits = model(inputs, mode='tensor')

    with torch.no_grad():
        img = F.normalize(model.clip.encode_image(inputs), dim=-1)
        txt = F.normalize(
            model.clip.encode_text(
                tokenize([f'the nice {c}' for c in CLASSES],
                         model.context_length)),
            dim=-1)
        cos = img @ txt.T
        scale = model.clip.logit_scale.exp()
    torch.testing.assert_close(logits, scale * cos, rtol=1e-5, atol=1e-5)
    probs = (scale * cos).softmax(-1)
    for i, ds in enumerate(results):
        torch.testing.assert_close(ds.pred_score, probs[i], rtol=1e-5,
                                   atol=1e-6)
        assert int(ds.pred_label) == int(probs[i].argmax())
        assert ds.gt_label.item() == [0, 1, 2, 3, 1][i]
        # scores are stored as Python floats (cheap per-image bookkeeping)
        assert all(isinstance(v, float) for v in ds.ood_scores.values())
        s = {k: torch.tensor(v) for k, v in ds.ood_scores.items()}
        assert set(s) == {'MCM', 'MSP', 'MaxLogit', 'Energy'}
        mcm = (cos[i] / 0.01).softmax(-1).max()
        torch.testing.assert_close(s['MCM'], mcm, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(s['MSP'], probs[i].max(), rtol=1e-5,
                                   atol=1e-6)
        torch.testing.assert_close(s['MaxLogit'], (scale * cos[i]).max(),
                                   rtol=1e-5, atol=1e-5)
        energy = 2.0 * torch.logsumexp(scale * cos[i] / 2.0, dim=0)
        torch.testing.assert_close(s['Energy'], energy, rtol=1e-5, atol=1e-5)
        assert ds.pred_cos == pytest.approx(float(cos[i].max()), abs=1e-5)
        assert not hasattr(ds, 'ood_details')


@MODELS.register_module(force=True)
class _VariantScorer(BaseOoDScorer):
    """A test scorer returning a ScorerOutput: score = max cos, a variant
    = min cos, per-image details = the argmin class and the embedding."""
    default_name = 'variant_test'

    def forward(self, image_embeds, cos_sim, logit_scale):
        return ScorerOutput(
            cos_sim.max(dim=-1).values,
            variants={'@seed=1': cos_sim.min(dim=-1).values},
            per_image=dict(
                worst=[CLASSES[j] for j in cos_sim.argmin(dim=-1).tolist()],
                embedding=image_embeds))


def test_scorer_output_variants_and_details_reach_the_data_samples():
    model = make_model(ood_scorers=[
        dict(type='_VariantScorer'), dict(type='MSPScorer')]).eval()
    data = batch(model, [0, 1, 2], seed=4)
    results = model(data['inputs'], data['data_samples'], mode='predict')
    with torch.no_grad():
        _, cos, embeds = model._zero_shot_logits(data['inputs'])
    for i, ds in enumerate(results):
        assert list(ds.ood_scores) == [
            'variant_test', 'variant_test@seed=1', 'MSP']
        assert ds.ood_scores['variant_test'] == pytest.approx(
            float(cos[i].max()), abs=1e-6)
        assert ds.ood_scores['variant_test@seed=1'] == pytest.approx(
            float(cos[i].min()), abs=1e-6)
        assert set(ds.ood_details) == {'variant_test'}
        details = ds.ood_details['variant_test']
        assert details['worst'] == CLASSES[int(cos[i].argmin())]
        assert details['embedding'].device.type == 'cpu'
        torch.testing.assert_close(details['embedding'], embeds[i])


def test_class_embedding_cache_follows_weights():
    model = make_model().eval()
    first = model.class_embeddings()
    assert model.class_embeddings() is first  # cached
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state['clip.ln_final.bias'] += 0.5
    model.load_state_dict(state)
    second = model.class_embeddings()
    assert not torch.allclose(first, second)
    model.train()
    model.eval()
    assert model.class_embeddings() is not second  # rebuilt after training


def test_logit_scale_is_clamped():
    model = make_model(max_logit_scale=50)
    with torch.no_grad():
        model.clip.logit_scale.fill_(10.0)
    assert model.logit_scale().item() == pytest.approx(50)


@pytest.mark.parametrize('template', ['a photo', 'a {} of {}', 'a {cls}'])
def test_bad_templates_are_rejected(template):
    with pytest.raises(ValueError, match='placeholder'):
        make_model(test_template=template)


def test_errors_name_the_problem():
    with pytest.raises(KeyError, match='Unknown CLIP architecture'):
        make_model(arch='ViT-X/99')
    with pytest.raises(KeyError, match='alias'):
        make_model(classnames='imagenet-21k')
    model = make_model()
    data = batch(model, [0, 4])
    with pytest.raises(ValueError, match='out of range'):
        model(data['inputs'], data['data_samples'], mode='loss')
    model = make_model(classnames=None)
    data = batch(model, [0, 1])
    with pytest.raises(RuntimeError, match='no class names'):
        model(data['inputs'], data['data_samples'], mode='loss')
    with pytest.raises(RuntimeError, match='Invalid mode'):
        model(data['inputs'], mode='bogus')


def test_imagenet_alias_gives_simple_categories():
    from mmpretrain.datasets.categories import IMAGENET_SIMPLE_CATEGORIES
    model = make_model(classnames='imagenet')
    assert model.classnames == list(IMAGENET_SIMPLE_CATEGORIES)
    assert model.test_tokens.shape == (1000, model.context_length)
    # tokenised once at construction, not saved in checkpoints
    assert 'test_tokens' not in model.state_dict()


def test_any_loss_is_called_through_forward():
    """The classifier calls ``loss(img, txt, scale, output_dict=True)``: a
    loss returning a tensor (e.g. one without parts) gives ``loss`` alone,
    CMALoss its logged parts too."""
    import torch.nn as nn
    from mmpretrain.registry import MODELS

    @MODELS.register_module(force=True)
    class SquaredScaleLoss(nn.Module):

        def forward(self, image_embeds, text_embeds, logit_scale,
                    output_dict=False):
            return (image_embeds * text_embeds).sum() * 0 + logit_scale**2

    model = make_model(loss=dict(type='SquaredScaleLoss'))
    data = batch(model, [0, 1, 2])
    out = model(data['inputs'], data['data_samples'], mode='loss')
    assert set(out) == {'loss', 'logit_scale'}
    torch.testing.assert_close(out['loss'], model.logit_scale()**2)


def test_test_autocast_encodes_images_in_bf16_and_prompts_in_fp32():
    """test_autocast=True: the image tower runs under bf16 autocast in
    predict (the published code's half-precision CLIP), the prompt
    embeddings stay fp32; 'auto' on the CPU and False are fp32."""
    labels = [0, 1, 2, 3]
    fp32 = make_model(test_autocast=False).eval()
    inputs = batch(fp32, labels)['inputs']
    want32 = fp32.predict(inputs)
    auto = make_model().eval()  # 'auto': fp32 off the GPU
    got = auto.predict(inputs)
    for a, b in zip(got, want32):
        assert torch.equal(a.pred_score, b.pred_score)
    half = make_model(test_autocast=True).eval()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        image_embeds = F.normalize(half.encode_image(inputs).float(), dim=-1)
    class_embeds = half.class_embeddings()
    assert class_embeds.dtype == torch.float32
    torch.testing.assert_close(class_embeds, fp32.class_embeddings())
    probs = (half.logit_scale() * image_embeds @ class_embeds.T).softmax(-1)
    got = half.predict(inputs)
    torch.testing.assert_close(torch.stack([ds.pred_score for ds in got]),
                               probs)
    # bf16 changes the scores (a test that could not tell would be void)
    assert not torch.equal(probs, torch.stack([d.pred_score
                                               for d in want32]))
    with pytest.raises(ValueError, match='test_autocast'):
        make_model(test_autocast='bf16')


def test_compile_auto_compiles_training_only(monkeypatch):
    """compile='auto' on a GPU machine: compiled forwards in training,
    eager ones at test time; compile=True: compiled in both, except the
    text forward at test time."""
    # built before CUDA is faked: MMEngine's first logger asks CUDA for the
    # device of the process (fails alone when faked)
    off = make_model(compile=False)
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    auto = make_model(compile='auto')
    forced = make_model(compile=True)
    assert auto._compiled is not None and off._compiled is None
    auto.train(), forced.train()
    assert auto._forwards() is auto._compiled
    assert forced._forwards() is forced._compiled
    auto.eval(), forced.eval(), off.eval()
    assert auto._forwards() is auto._eager
    assert forced._forwards() == (forced._compiled[0], forced._eager[1])
    assert off._forwards() is off._eager
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    assert make_model(compile='auto')._compiled is None  # CPU: eager


def test_data_preprocessor_dict_without_type_changes_the_defaults():
    """model.data_preprocessor.decode_ahead=False from the command line:
    CLIP's normalisation kept, the one argument changed."""
    default = make_model().data_preprocessor
    changed = make_model(
        data_preprocessor=dict(decode_ahead=False)).data_preprocessor
    assert default.decode_ahead and not changed.decode_ahead
    assert type(changed) is type(default)
    torch.testing.assert_close(changed.mean, default.mean)
    torch.testing.assert_close(changed.std, default.std)
    assert changed.to_rgb and default.to_rgb


def test_compiled_test_forward_pads_to_one_batch_size():
    """compile=True at test time: the image forward sees one batch size
    (smaller batches padded with zero images, their embeddings dropped)
    and the text forward runs eagerly; training batches are not padded."""
    model = make_model().eval()
    image_eager, text_eager = model._eager
    sizes = []

    def compiled_image(images):
        sizes.append(images.shape[0])
        return image_eager(images)

    model._compiled = (compiled_image, lambda tokens: 1 / 0)
    model._compile_eval = True
    images = batch(model, [0, 1, 2, 0, 1, 2, 0, 1])['inputs']
    with torch.no_grad():
        full = model.encode_image(images)
        part = model.encode_image(images[:3])
        text = model.encode_text(model.tokenize(['a photo of a dog']))
    assert sizes == [8, 8]
    torch.testing.assert_close(part, full[:3])
    assert part.shape[0] == 3 and text.shape[0] == 1
    model.train()
    model._compiled = (compiled_image, text_eager)
    model.encode_image(images[:3])
    assert sizes == [8, 8, 3]
