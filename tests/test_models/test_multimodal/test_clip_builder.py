"""CLIP builder: architectures and every weight source."""
import clip
import pytest
import torch

from cma_ood.models import build_clip, list_clip_archs, load_clip_state_dict


def assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


@pytest.mark.parametrize('arch', ['tiny-vit-32px', 'tiny-rn-32px'])
def test_tiny_archs_encode(arch):
    model = build_clip(arch)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    img = model.encode_image(torch.randn(3, 3, 32, 32))
    tokens = clip.tokenize(['a photo of a star'], context_length=24)
    assert img.shape == (3, 64)
    assert model.encode_text(tokens).shape == (1, 64)


def test_openai_arch_shapes_match_published_models():
    # the architectures clip.load can fetch are all known to the builder
    assert set(clip.available_models()) <= set(list_clip_archs())
    model = build_clip('ViT-B/16')
    assert model.visual.conv1.weight.shape == (768, 3, 16, 16)
    assert model.text_projection.shape == (512, 512)
    assert model.context_length == 77
    assert sum(p.numel() for p in model.parameters()) == 149_620_737


def test_state_dict_file_with_wrappers_and_prefixes(tmp_path):
    torch.manual_seed(1)
    src = build_clip('tiny-vit-32px')
    wrapped = {
        'epoch': 3,
        'model_state_dict': {
            f'module.{k}': v
            for k, v in src.state_dict().items()
        }
    }
    path = tmp_path / 'ckpt.pt'
    torch.save(wrapped, path)
    assert_same_weights(build_clip('tiny-vit-32px', str(path)), src)


def test_torchscript_archive_like_openai(tmp_path):
    torch.manual_seed(2)
    src = build_clip('tiny-vit-32px').eval()
    traced = torch.jit.trace(
        src, (torch.randn(1, 3, 32, 32),
              clip.tokenize(['a dog'], context_length=24)),
        check_trace=False)
    path = tmp_path / 'tiny.pt'
    torch.jit.save(traced, str(path))
    state = load_clip_state_dict(str(path))
    assert 'visual.conv1.weight' in state
    assert_same_weights(build_clip('tiny-vit-32px', str(path)), src)


def test_openai_name_goes_through_clip_load(monkeypatch):
    torch.manual_seed(3)
    src = build_clip('tiny-vit-32px')
    calls = []

    def fake_load(name, device, jit, download_root):
        calls.append((name, device, jit, download_root))
        return src

    monkeypatch.setattr(clip, 'load', fake_load)
    monkeypatch.setattr(clip, 'available_models', lambda: ['tiny-vit-32px'])
    model = build_clip('tiny-vit-32px', 'openai', download_root='/cache')
    assert calls == [('tiny-vit-32px', 'cpu', False, '/cache')]
    assert_same_weights(model, src)


def test_errors_name_the_culprit(tmp_path):
    with pytest.raises(FileNotFoundError, match='nope.pt'):
        build_clip('tiny-vit-32px', str(tmp_path / 'nope.pt'))
    path = tmp_path / 'rn.pth'
    torch.save(build_clip('tiny-rn-32px').state_dict(), path)
    with pytest.raises(RuntimeError, match='does not match') as err:
        build_clip('tiny-vit-32px', str(path))
    assert 'visual.' in str(err.value)
    with pytest.raises(KeyError, match='no weights'):
        build_clip('tiny-vit-32px', 'openai')


def test_long_prompt_is_an_error_not_a_truncation():
    from cma_ood.models.multimodal.clip_builder import tokenize
    with pytest.raises(ValueError, match='longer than the context length 8'):
        tokenize(['a photo of a very very long class name here'], 8)


def test_openai_offline_says_which_file_to_fetch_and_where(monkeypatch,
                                                           tmp_path):
    """No internet: clip's download fails inside urllib; the error names
    the URL, the file clip.load looks for and the config keys to use."""
    import urllib.error
    import urllib.request

    def offline(*args, **kwargs):
        raise urllib.error.URLError('[Errno -3] Temporary failure in name '
                                    'resolution')

    monkeypatch.setattr(urllib.request, 'urlopen', offline)
    with pytest.raises(OSError) as err:
        build_clip('ViT-B/16', 'openai', download_root=str(tmp_path))
    msg = str(err.value)
    url = clip.clip._MODELS['ViT-B/16']
    assert url in msg
    assert str(tmp_path / 'ViT-B-16.pt') in msg
    assert 'model.download_root' in msg
    assert 'model.pretrained=/path/to/ViT-B-16.pt' in msg
    assert 'name resolution' in msg and '\n' not in msg
    assert isinstance(err.value.__cause__, urllib.error.URLError)
