"""The fast tokeniser (per-piece memoised BPE, ftfy skipped for plain
ASCII) gives exactly openai-clip's token ids.

The reference is always a fresh ``clip.simple_tokenizer.SimpleTokenizer``
(its BPE cache empty), so that our ids are computed, not read from clip's
cache, and ``clip.tokenize`` with that tokenizer in place."""
import random
import re
import string

import clip
import pytest
import torch
from clip.simple_tokenizer import SimpleTokenizer, basic_clean

from cma_ood.models.multimodal import clip_builder
from cma_ood.models.multimodal.clip_builder import (bpe_symbols,
                                                    cached_tokenize,
                                                    clean_text, encode_texts,
                                                    is_plain_text, tokenize)
from cma_ood.models.ood_scorers.neglabel import NegLabelScorer

PLAIN_CHARS = [chr(c) for c in range(0x20, 0x7f) if chr(c) != '&']

ADVERSARIAL = [
    # HTML entities (html.unescape twice, ftfy's own unescaping)
    '&amp;', 'a &amp;amp; b', 'AT&T', 'fish & chips', 'fish &chips',
    'dog&#39;s toy', 'it&#x27;s', '&lt;b&gt;bold&lt;/b&gt;',
    '<b>&amp;</b>', '&hellip;', 'caf&eacute;', 'P&EACUTE;REZ', '&notit;',
    # mojibake that ftfy fixes, alone and in context
    'cafÃ©', 'âœ” No problems', 'doesnÃ¢â‚¬â„¢t', 'the Ã©lan of it',
    'Ã', 'Ã©', '\u00e2\u0080\u0099s',
    # non-ASCII
    'café', 'Café Noir', 'naïve', 'e\u0301cole', 'ß', 'İstanbul', 'ǅungla',
    'ＬＯＵＤ　ＮＯＩＳＥＳ', 'ﬂuﬃ', '日本の猫', 'emoji 🐶 dog', '½ cup',
    '²', 'x\u200by', '\ufeffbom', '‘curly’ “quotes”', 'it’s',
    # apostrophes, digits, punctuation, special tokens
    "dog's", "DOG'S", "it'S", "rock 'n' roll", "'s", "''s", "it's'll",
    "we're they've I'm you'll he'd", "o'clock", 'x\'', '10', '3.5',
    '1990s', '007 agent', 'a-b-c', 'a/b', '(x)', '...!!!', '--', '-',
    '<|endoftext|>', '<|STARTOFTEXT|>', 'a<|endoftext|>b', '<|foo|>',
    # whitespace and control characters
    '', ' ', '   ', '  a   b  ', 'a\tb\nc', 'a\r\nb', 'a\u00a0b',
    'a\u3000b', 'a\u2028b', 'a\x0bb', 'a\x1cb', '\x00x', '\x1b[31mred\x1b[0m',
    'del\x7f', 'c1\x85ctrl', 'mixed\tCase & Ã© stuff',
]


@pytest.fixture
def fresh_clip_tokenizer(monkeypatch):
    """A new SimpleTokenizer as the one ``clip.tokenize`` (and so
    :func:`tokenize`) uses: its BPE cache holds only the special tokens."""
    tokenizer = SimpleTokenizer()
    monkeypatch.setattr(clip.clip, '_tokenizer', tokenizer)
    return tokenizer


def reference_encode(texts):
    tokenizer = SimpleTokenizer()
    return [tokenizer.encode(text) for text in texts]


def test_tokenize_equals_clip_on_every_shipped_neglabel_prompt(
        fresh_clip_tokenizer, monkeypatch):
    """All NegLabel candidate prompts of the shipped txtfiles/, built as
    NegLabelScorer builds them (default templates)."""
    scorer = NegLabelScorer()
    nouns, adjs = scorer.read_candidates()
    kinds = ['n'] * len(nouns) + ['a'] * len(adjs)
    prompts = scorer.prompts(nouns + adjs, kinds)
    assert len(nouns) > 50_000 and len(adjs) > 10_000
    cleaned = []
    monkeypatch.setattr(clip_builder, 'basic_clean',
                        lambda t: cleaned.append(t) or basic_clean(t))
    ours = tokenize(prompts, 77)
    # every prompt took the fast path (no ftfy), all BPE computed by us
    assert cleaned == []
    assert set(fresh_clip_tokenizer.cache) == {'<|startoftext|>',
                                               '<|endoftext|>'}
    ref = clip.tokenize(prompts, context_length=77)
    assert len(fresh_clip_tokenizer.cache) > 40_000  # it did encode them
    assert ours.dtype == torch.int64 and ours.shape == (len(prompts), 77)
    assert torch.equal(ours, ref.long())


def test_candidate_words_in_other_templates_match_clip():
    """A deterministic sample of the candidate words in templates with
    punctuation next to the word ('.', ',', "'s")."""
    nouns, adjs = NegLabelScorer().read_candidates()
    words = random.Random(0).sample(nouns + adjs, 1500)
    words += [w for w in nouns + adjs if not w.isalpha()][:1500]
    templates = ['a photo of a {}.', "a {}'s photo", '{}',
                 'A photo of the {}, a type of object.', 'The nice {}']
    texts = [t.format(w) for t in templates for w in words]
    assert encode_texts(texts, SimpleTokenizer()) == reference_encode(texts)


def test_plain_characters_are_left_alone_by_clips_cleaning():
    """The claim behind is_plain_text: ftfy and html.unescape leave every
    printable ASCII character but '&' unchanged, in any context."""
    for char in PLAIN_CHARS:
        for text in (char, f'a{char}b', f' {char}{char} ', f'x {char}',
                     char * 5, f'<b>{char}</b>', f'#{char};'):
            assert is_plain_text(text), repr(text)
            assert basic_clean(text) == text.strip(), repr(text)
    for text in ('&', 'a&b', 'a\tb', 'a\nb', 'a\x7fb', 'é', 'a\xa0b',
                 '\x1b[0m', 'Ã©'):
        assert not is_plain_text(text), repr(text)


def test_random_plain_strings_match_clip():
    """Random printable-ASCII strings, weighted to the characters that the
    regular expression and the cleaning treat specially."""
    rng = random.Random(1)
    tricky = "'''sStTdDmMlLrReEvV  0123456789<|>.-/,!?\"()"
    alphabet = PLAIN_CHARS + list(tricky) * 3
    texts = [''.join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
             for _ in range(4000)]
    texts += [f"{rng.choice(['', ' ', 'x'])}<|endoftext|>"
              f"{rng.choice(['', 's', ' a'])}" for _ in range(20)]
    ref = SimpleTokenizer()
    for text in texts:
        assert clean_text(text) == ' '.join(basic_clean(text).split()).lower()
    assert encode_texts(texts, SimpleTokenizer()) == [
        ref.encode(t) for t in texts]


def test_adversarial_texts_match_clip(fresh_clip_tokenizer):
    texts = ADVERSARIAL + [f'a photo of a {t}.' for t in ADVERSARIAL] + \
        [f'{t} {t}' for t in ADVERSARIAL]
    assert sum(not is_plain_text(t) for t in ADVERSARIAL) >= 45
    ours = encode_texts(texts, SimpleTokenizer())
    assert ours == reference_encode(texts)
    # the cleaning changes some texts, or this would test less than it says
    assert sum(clean_text(t) != ' '.join(t.split()).lower()
               for t in ADVERSARIAL) >= 20
    fits = [t for t, ids in zip(texts, ours) if len(ids) + 2 <= 77]
    assert len(fits) == len(texts)
    got = tokenize(fits, 77)
    assert torch.equal(got, clip.tokenize(fits, context_length=77).long())


def test_bpe_symbols_match_clip_bpe_on_repetitive_and_random_words():
    """Words with repeated pairs (several merges of one pair in a step)
    and random letter and byte strings."""
    ref = SimpleTokenizer()
    rng = random.Random(2)
    words = [c * k for c in 'aeslz' for k in range(1, 20)]
    words += [p * k for p in ('ab', 'la', 'ha', 'ing', 'ss', 'ana')
              for k in range(1, 10)]
    words += ['mississippi', 'bananarama', 'aaabaaab', 'abcabcabcab']
    words += [''.join(rng.choice(string.ascii_lowercase)
                      for _ in range(rng.randint(1, 25)))
              for _ in range(3000)]
    words += [''.join(chr(rng.randint(0xa1, 0x3000))
                      for _ in range(rng.randint(1, 6)))
              for _ in range(300)]
    for word in words:
        token = ''.join(ref.byte_encoder[b] for b in word.encode('utf-8'))
        assert bpe_symbols(token, ref.bpe_ranks) == \
            ref.bpe(token).split(' '), word


def test_tokenize_length_limit_shapes_and_dtype(fresh_clip_tokenizer):
    text = 'a photo of a dog'  # 5 tokens, 7 with start and end
    assert len(SimpleTokenizer().encode(text)) == 5
    exact = tokenize([text, 'x'], 7)
    assert torch.equal(exact, clip.tokenize([text, 'x'], 7).long())
    assert exact[0, -1] == 49407 and exact[1, 2] == 49407
    with pytest.raises(ValueError,
                       match=re.escape(f"Prompt '{text} and a cat' is "
                                       'longer than the context length 7')):
        tokenize(['ok', f'{text} and a cat', f'{text} too'], 7)
    with pytest.raises(ValueError, match='longer than the context length 6'):
        tokenize(text, 6)
    single = tokenize('The nice Cat', 24)
    assert single.dtype == torch.int64
    assert torch.equal(single, clip.tokenize('The nice Cat', 24).long())
    assert tokenize([], 24).shape == (0, 24)
    assert tokenize(('a', 'b'), 24).shape == (2, 24)


def test_cached_tokenize_cold_and_warm_equal_clip(tmp_path):
    prompts = [f'the nice {w}' for w in ADVERSARIAL[:40]] + ['a  b', '']
    ref = clip.tokenize(prompts, context_length=24).long()
    cold = cached_tokenize(prompts, 24, tmp_path)
    files = list(tmp_path.glob('tokens-*.pt'))
    assert len(files) == 1
    assert torch.equal(torch.load(files[0]), ref.int())
    warm = cached_tokenize(prompts, 24, tmp_path)
    assert torch.equal(cold, ref) and torch.equal(warm, ref)
    assert warm.dtype == torch.int64
    assert torch.equal(cached_tokenize(prompts, 24, None), ref)
