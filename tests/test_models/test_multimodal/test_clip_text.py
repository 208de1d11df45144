"""The truncated causal text forward equals CLIP's full 77-token forward.

openai-clip's LayerNorm computes in float32 whatever the input, so the
comparison is in float32: the two forwards differ only by the order of
floating-point operations (SDPA with ``is_causal`` vs an additive mask)."""
import pytest
import torch

from cma_ood.models import MultiModalClassifier, build_clip
from cma_ood.models.multimodal.clip_builder import tokenize
from cma_ood.models.multimodal.clip_text import encode_text_truncated, text_length

PROMPTS = ['a photo of a cat', 'the nice electric ray',
           'This is a very small and quite interesting photo', 'x', '']


pytestmark = pytest.mark.usefixtures('single_thread')


def test_text_length_rounds_up_and_caps():
    tokens = tokenize(PROMPTS, 77)
    last = int(tokens.argmax(-1).max())
    assert text_length(tokens, multiple=1) == last + 1
    assert text_length(tokens) % 8 == 0 and text_length(tokens) > last
    assert text_length(tokens[:, :last + 1], multiple=64) == last + 1


@pytest.mark.parametrize('arch', ['tiny-vit-32px', 'ViT-B/16'])
@pytest.mark.parametrize('multiple', [1, 8])
def test_truncated_forward_equals_full_forward(arch, multiple):
    torch.manual_seed(0)
    model = build_clip(arch).eval()
    with torch.no_grad():
        # random init of CLIP leaves some biases at 0: perturb everything
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    tokens = tokenize(PROMPTS, model.context_length)
    with torch.no_grad():
        full = model.encode_text(tokens)
        cut = encode_text_truncated(
            model, tokens[:, :text_length(tokens, multiple)])
    assert cut.shape == full.shape
    torch.testing.assert_close(cut, full, rtol=1e-5, atol=1e-5)
    # padding positions after the EOT do not matter at all: garbage there
    # gives the same result
    noisy = tokens.clone()
    cols = torch.arange(tokens.shape[1])[None] > tokens.argmax(-1)[:, None]
    noisy[cols] = 1234
    with torch.no_grad():
        torch.testing.assert_close(model.encode_text(noisy), full, rtol=1e-5,
                                   atol=1e-5)


def test_gradients_are_identical():
    torch.manual_seed(1)
    model = build_clip('tiny-vit-32px')
    tokens = tokenize(PROMPTS, model.context_length)
    weights = torch.randn(len(PROMPTS), 64)
    grads = []
    for fn in (lambda: model.encode_text(tokens),
               lambda: encode_text_truncated(model,
                                             tokens[:, :text_length(tokens)])):
        model.zero_grad()
        (fn() * weights).sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()
                      if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name],
                                   rtol=1e-4, atol=1e-6, msg=name)


def test_classifier_encode_prompts_sorted_batches_keep_order():
    torch.manual_seed(2)
    model = MultiModalClassifier(arch='tiny-vit-32px', classnames=['a', 'b'],
                                 text_batch_size=2).eval()
    tokens = tokenize(PROMPTS * 3, model.context_length)
    with torch.no_grad():
        ref = torch.nn.functional.normalize(model.clip.encode_text(tokens),
                                            dim=-1)
    torch.testing.assert_close(model.encode_prompts(tokens), ref, rtol=1e-5,
                               atol=1e-6)
    plain = MultiModalClassifier(arch='tiny-vit-32px', classnames=['a', 'b'],
                                 truncate_text=False)
    plain.load_state_dict(model.state_dict())
    torch.testing.assert_close(plain.encode_prompts(tokens), ref, rtol=1e-5,
                               atol=1e-6)


def test_pad_prompt_ids_to_a_multiple_capped_at_the_limit():
    from cma_ood.models.multimodal.clip_text import pad_prompt_ids
    ids = torch.tensor([4, 9, 11, 2, 7])
    out = pad_prompt_ids(ids, 8, 1000)
    assert out.tolist() == [4, 9, 11, 2, 7, 4, 4, 4]
    assert pad_prompt_ids(ids, 8, 6).tolist() == [4, 9, 11, 2, 7, 4]
    assert pad_prompt_ids(ids, 8, 3) is ids  # never fewer than given
    assert pad_prompt_ids(ids, 5, 1000) is ids  # already a multiple
    assert pad_prompt_ids(ids, 1, 1000) is ids
    empty = torch.zeros(0, dtype=torch.long)
    assert pad_prompt_ids(empty, 8, 1000).numel() == 0
    # every size n maps to the multiple at or above it
    for n in range(1, 40):
        got = pad_prompt_ids(torch.arange(n), 8, 1000).numel()
        assert got % 8 == 0 and n <= got < n + 8
