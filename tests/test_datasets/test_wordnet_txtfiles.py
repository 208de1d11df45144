"""Tests for the WordNet candidate lists (cma_ood.datasets.wordnet, the
tools/build_wordnet_txtfiles.py CLI and the committed txtfiles/).

The builder tests run nltk's reader on a tiny WordNet-format database built
in tmp_path, so they need no Debian package.
"""
import importlib.util
from pathlib import Path

import nltk.data
import pytest

from cma_ood.datasets.wordnet import (ADJ_LEXNAMES, DEFAULT_LEXNAMES,
                                      NOUN_LEXNAMES, PUBLISHED_LINE_COUNTS,
                                      WORDNET_LEXNAMES, build_candidate_lists,
                                      is_adjective_lexname, is_noun_lexname,
                                      lexname_pos, read_candidate_list,
                                      write_candidate_lists,
                                      write_lexnames_table)

import _helpers  # noqa: E402  (tests/ is on sys.path)

REPO_ROOT = Path(_helpers.REPO)
TXTFILES = REPO_ROOT / 'txtfiles'

# lexicographer file numbers (WordNet 3.0)
ADJ_ALL, ADJ_PERT, NOUN_TOPS, NOUN_ACT, NOUN_ANIMAL, NOUN_ARTIFACT, ADJ_PPL = (
    0, 1, 3, 4, 5, 6, 44)

LICENSE_HEADER = (
    '  1 This is a tiny WordNet-format fixture for tests.  \n'
    '  2 WordNet 3.0 Copyright 2006 by Princeton University.  \n')

# Synsets in data-file order: (key, lex file number, ss_type, words,
# pointers). A pointer is (symbol, target key, source/target field); words
# may carry an adjective marker such as "(ip)".
NOUNS = [
    ('entity', NOUN_TOPS, 'n', ['Entity'], []),
    ('pursuit', NOUN_ACT, 'n', ['Hot_Pursuit', 'chase'], []),
    ('dog', NOUN_ANIMAL, 'n', ['dog', 'domestic_dog'], []),
    ('act1', NOUN_ACT, 'n', ['act', 'deed'], []),
    ('knife', NOUN_ARTIFACT, 'n', ['pocket_knife', 'penknife'], []),
    ('act2', NOUN_ACT, 'n', ['act'], []),  # duplicate within noun.act
    ('entity2', NOUN_ACT, 'n', ['entity'], []),  # also first in noun.Tops
    ('chase', NOUN_ARTIFACT, 'n', ['chase', 'groove'], []),
    ('thing', NOUN_TOPS, 'n', ['thing'], []),
]
ADJS = [
    # cluster 1: heads able / unable (antonyms), satellites after each head
    ('able', ADJ_ALL, 'a', ['able'],
     [('!', 'unable', '0101'), ('&', 'capable', '0000')]),
    ('capable', ADJ_ALL, 's', ['Capable', 'competent'],
     [('&', 'able', '0000')]),
    ('unable', ADJ_ALL, 'a', ['unable'],
     [('!', 'able', '0101'), ('&', 'incapable', '0000')]),
    ('incapable', ADJ_ALL, 's', ['incapable'], [('&', 'unable', '0000')]),
    # adj.pert synset in between: order is per file, not per data file
    ('martian', ADJ_PERT, 'a', ['Martian'], []),
    # cluster 2: three heads joined by antonymy (a-b, b-c)
    ('hot', ADJ_ALL, 'a', ['hot'], [('!', 'cold', '0101')]),
    ('galore', ADJ_ALL, 's', ['galore(ip)', 'plentiful'],
     [('&', 'hot', '0000')]),
    ('cold', ADJ_ALL, 'a', ['cold'],
     [('!', 'hot', '0101'), ('!', 'lukewarm', '0101')]),
    ('lukewarm', ADJ_ALL, 'a', ['lukewarm'], [('!', 'cold', '0101')]),
    # a satellite whose first word is the dropped head "able"
    ('able2', ADJ_ALL, 's', ['able', 'adept'], [('&', 'cold', '0000')]),
    # cluster 3: one head without antonym, with a satellite
    ('aerial', ADJ_ALL, 'a', ['aerial'], [('&', 'free', '0000')]),
    ('free', ADJ_ALL, 's', ['free-flying'], [('&', 'aerial', '0000')]),
    # adj.ppl head with an antonym: not an adj.all cluster, kept
    ('known', ADJ_PPL, 'a', ['known'], [('!', 'unknown', '0101')]),
    ('unknown', ADJ_PPL, 'a', ['unknown'], [('!', 'known', '0101')]),
    ('solar', ADJ_PERT, 'a', ['solar'], []),
]


def _data_lines(entries, pos_of):
    """Data-file text and {key: offset} for ``entries``."""
    def line(entry, offsets):
        key, lexnum, ss_type, words, pointers = entry
        fields = [f'{offsets[key]:08d}', f'{lexnum:02d}', ss_type,
                  f'{len(words):02x}']
        for word in words:
            fields += [word, '0']
        fields.append(f'{len(pointers):03d}')
        for symbol, target, source_target in pointers:
            fields += [symbol, f'{offsets[target]:08d}', pos_of[target],
                       source_target]
        return ' '.join(fields) + f' | gloss of {key}  \n'

    # offsets are fixed-width, so line lengths do not depend on them
    offsets = {entry[0]: 0 for entry in entries}
    pos = len(LICENSE_HEADER.encode())
    for entry in entries:
        offsets[entry[0]] = pos
        pos += len(line(entry, offsets).encode())
    text = LICENSE_HEADER + ''.join(line(e, offsets) for e in entries)
    return text, offsets


def _index_text(entries, offsets, pos):
    """index.<pos> text: each lemma with the offsets of its synsets."""
    senses = {}
    for key, _, _, words, _ in entries:
        for word in words:
            lemma = word.split('(')[0].lower()
            senses.setdefault(lemma, []).append(offsets[key])
    lines = [LICENSE_HEADER]
    for lemma in sorted(senses):
        offs = senses[lemma]
        lines.append(f'{lemma} {pos} {len(offs)} 0 {len(offs)} 0 '
                     + ' '.join(f'{o:08d}' for o in offs) + '  \n')
    return ''.join(lines)


@pytest.fixture
def wordnet_dir(tmp_path):
    """A WordNet-format database with the files nltk's reader opens."""
    root = tmp_path / 'wn'
    root.mkdir()
    pos_of = {e[0]: 'n' for e in NOUNS}
    pos_of.update({e[0]: e[2] for e in ADJS})
    # pointers name the target's ss_type except that satellites' heads and
    # antonyms are always 'a' in WordNet; the fixture only points at heads
    pos_of.update({e[0]: 'a' for e in ADJS if e[2] == 'a'})
    noun_text, noun_offsets = _data_lines(NOUNS, pos_of)
    adj_text, adj_offsets = _data_lines(ADJS, pos_of)
    (root / 'data.noun').write_text(noun_text)
    (root / 'data.adj').write_text(adj_text)
    (root / 'index.noun').write_text(_index_text(NOUNS, noun_offsets, 'n'))
    (root / 'index.adj').write_text(_index_text(ADJS, adj_offsets, 'a'))
    for name in ('index.verb', 'index.adv', 'noun.exc', 'verb.exc',
                 'adj.exc', 'adv.exc'):
        (root / name).write_text('')
    return root


FIXTURE_LEXNAMES = ('noun.Tops', 'noun.act', 'noun.artifact', 'adj.all',
                    'adj.pert', 'adj.ppl')


def test_fixture_offsets_are_byte_offsets(wordnet_dir):
    # every synset line starts with its own byte offset
    data = (wordnet_dir / 'data.adj').read_bytes()
    for line in data.splitlines(keepends=True):
        if not line.startswith(b' '):
            assert data.index(line) == int(line[:8])


def test_build_first_lemma_within_file_dedup(wordnet_dir):
    lists = build_candidate_lists(wordnet_dir, FIXTURE_LEXNAMES)
    assert list(lists) == list(FIXTURE_LEXNAMES)
    assert lists == {
        # lower-cased; noun.animal ("dog") is not asked for
        'noun.Tops': ['entity', 'thing'],
        # first lemma only ("chase", "deed" are not first), "_" -> " ",
        # second "act" dropped, "entity" kept (dedup is per file)
        'noun.act': ['hot pursuit', 'act', 'entity'],
        # "chase" is the first lemma here, so it is listed
        'noun.artifact': ['pocket knife', 'chase'],
        # satellites kept; first head of each cluster (able, hot, aerial)
        # skipped, but "able" comes back as a satellite's first lemma;
        # marker "(ip)" stripped
        'adj.all': ['capable', 'unable', 'incapable', 'galore', 'cold',
                    'lukewarm', 'able', 'free-flying'],
        'adj.pert': ['martian', 'solar'],
        # not a cluster file: both antonym heads kept
        'adj.ppl': ['known', 'unknown'],
    }


def test_build_keep_all_cluster_heads(wordnet_dir):
    lists = build_candidate_lists(wordnet_dir, ['adj.all'],
                                  drop_first_cluster_heads=False)
    assert lists == {'adj.all': [
        'able', 'capable', 'unable', 'incapable', 'hot', 'galore', 'cold',
        'lukewarm', 'aerial', 'free-flying']}


def test_build_dedup_across_files_in_file_order(wordnet_dir):
    lists = build_candidate_lists(
        wordnet_dir, ['noun.act', 'noun.Tops', 'noun.artifact', 'adj.all'],
        dedup_across_files=True, drop_first_cluster_heads=False)
    assert lists == {
        'noun.act': ['hot pursuit', 'act', 'entity'],
        'noun.Tops': ['thing'],  # "entity" went to the earlier noun.act
        'noun.artifact': ['pocket knife', 'chase'],
        'adj.all': ['able', 'capable', 'unable', 'incapable', 'hot',
                    'galore', 'cold', 'lukewarm', 'aerial', 'free-flying'],
    }


def test_build_uses_work_dir_and_leaves_source_untouched(wordnet_dir,
                                                         tmp_path):
    before = sorted(p.name for p in wordnet_dir.iterdir())
    work = tmp_path / 'stage'
    lists = build_candidate_lists(wordnet_dir, ['noun.Tops'], work_dir=work)
    assert lists == {'noun.Tops': ['entity', 'thing']}
    assert sorted(p.name for p in wordnet_dir.iterdir()) == before
    assert (work / 'lexnames').read_text().splitlines()[3] == \
        '03\tnoun.Tops\t1'
    assert (work / 'data.noun').read_bytes() == \
        (wordnet_dir / 'data.noun').read_bytes()
    # the staging dir is only allowed in nltk's data path while building
    assert str(work.resolve()) not in nltk.data.path


def test_missing_wordnet_dir_and_file(tmp_path, wordnet_dir):
    missing = tmp_path / 'nowhere'
    with pytest.raises(FileNotFoundError) as err:
        build_candidate_lists(missing)
    assert str(missing) in str(err.value)
    assert 'wordnet-base' in str(err.value)

    (wordnet_dir / 'data.noun').unlink()
    with pytest.raises(FileNotFoundError) as err:
        build_candidate_lists(wordnet_dir, ['noun.Tops'])
    assert str(wordnet_dir / 'data.noun') in str(err.value)
    # adjectives alone do not need data.noun
    assert build_candidate_lists(wordnet_dir, ['adj.pert']) == {
        'adj.pert': ['martian', 'solar']}


def test_unknown_lexname_rejected(wordnet_dir):
    with pytest.raises(ValueError, match='noun.animals'):
        build_candidate_lists(wordnet_dir, ['noun.animals'])
    with pytest.raises(ValueError, match='duplicate'):
        build_candidate_lists(wordnet_dir, ['noun.act', 'noun.act'])


def test_lexnames_table(tmp_path):
    path = write_lexnames_table(tmp_path / 'lexnames')
    lines = path.read_text().splitlines()
    assert len(lines) == 45
    assert lines[0] == '00\tadj.all\t3'
    assert lines[3] == '03\tnoun.Tops\t1'
    assert lines[13] == '13\tnoun.food\t1'
    assert lines[29] == '29\tverb.body\t2'
    assert lines[44] == '44\tadj.ppl\t3'
    for i, line in enumerate(lines):
        number, name, category = line.split('\t')
        assert int(number) == i
        prefix = name.split('.')[0]
        assert category == {'noun': '1', 'verb': '2', 'adj': '3',
                            'adv': '4'}[prefix]
    assert len({name for name, _ in WORDNET_LEXNAMES}) == 45


def test_lexname_groups():
    assert DEFAULT_LEXNAMES == NOUN_LEXNAMES + ADJ_LEXNAMES
    assert len(NOUN_LEXNAMES) == 24 and len(ADJ_LEXNAMES) == 3
    assert 'noun.animal' not in DEFAULT_LEXNAMES
    assert 'noun.food' not in DEFAULT_LEXNAMES
    assert all(is_noun_lexname(n) for n in NOUN_LEXNAMES)
    assert all(is_adjective_lexname(n) for n in ADJ_LEXNAMES)
    assert not is_adjective_lexname('noun.shape')
    assert lexname_pos('verb.motion') == 'v'
    assert lexname_pos('adv.all') == 'r'
    assert set(PUBLISHED_LINE_COUNTS) == set(DEFAULT_LEXNAMES)
    assert sum(PUBLISHED_LINE_COUNTS.values()) == 79455


def test_write_and_read_lists(tmp_path):
    paths = write_candidate_lists(
        {'noun.act': ['hot pursuit', 'act'], 'adj.pert': ['martian']},
        tmp_path / 'out')
    assert [p.name for p in paths] == ['noun.act.txt', 'adj.pert.txt']
    assert paths[0].read_bytes() == b'hot pursuit\nact\n'
    assert read_candidate_list(paths[1]) == ['martian']
    with pytest.raises(ValueError):
        write_candidate_lists({'noun.act': ['a\nb']}, tmp_path / 'bad')


def _load_tool():
    spec = importlib.util.spec_from_file_location(
        'build_wordnet_txtfiles',
        REPO_ROOT / 'tools' / 'build_wordnet_txtfiles.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tool_writes_files(wordnet_dir, tmp_path, capsys):
    tool = _load_tool()
    out = tmp_path / 'txt'
    rc = tool.main(['--wordnet-dir', str(wordnet_dir), '--out-dir', str(out),
                    '--lexnames', 'noun.act', 'adj.all', 'adj.ppl'])
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == [
        'adj.all.txt', 'adj.ppl.txt', 'noun.act.txt']
    assert (out / 'noun.act.txt').read_text(encoding='utf-8') == \
        'hot pursuit\nact\nentity\n'
    assert (out / 'adj.ppl.txt').read_text(encoding='utf-8') == \
        'known\nunknown\n'
    assert read_candidate_list(out / 'adj.all.txt')[0] == 'capable'
    summary = capsys.readouterr().out
    assert 'noun.act' in summary and '5897' in summary  # published count


def test_tool_reports_missing_dir(tmp_path, capsys):
    tool = _load_tool()
    rc = tool.main(['--wordnet-dir', str(tmp_path / 'nope'),
                    '--out-dir', str(tmp_path / 'out')])
    assert rc == 2
    err = capsys.readouterr().err
    assert str(tmp_path / 'nope') in err and 'wordnet-base' in err
    assert not (tmp_path / 'out').exists()


@pytest.mark.parametrize('lexname', DEFAULT_LEXNAMES)
def test_committed_txtfiles_match_published_counts(lexname):
    path = TXTFILES / f'{lexname}.txt'
    assert path.is_file(), f'{path} missing; run tools/build_wordnet_txtfiles.py'
    raw = path.read_bytes()
    assert raw.endswith(b'\n') and not raw.endswith(b'\n\n')
    labels = raw.decode('utf-8').split('\n')[:-1]
    assert all(labels), 'empty line'
    assert len(set(labels)) == len(labels), 'duplicate labels'
    assert all(label == label.lower() and '_' not in label
               and label == label.strip() for label in labels)
    published = PUBLISHED_LINE_COUNTS[lexname]
    assert abs(len(labels) - published) <= 0.01 * published, (
        f'{lexname}: {len(labels)} lines vs {published} published')
