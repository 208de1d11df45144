"""The model zoo files, in mmpretrain's format: the root model-index.yml
imports one configs/<algorithm>/metafile.yml per algorithm folder (each
beside a README.md); every metafile names existing configs and READMEs and
lists every config of its folder; the published numbers equal those of
README.md's model-zoo table and of the folder's README."""
import glob
import os.path as osp
import re

import pytest
import yaml
from mmengine.config import Config

from _helpers import REPO

OOD = 'Out-of-Distribution Detection'
CLS = 'Image Classification'
MEAN = 'ImageNet-1k (MOS)'  # the mean over the MOS sets
MOS_SETS = ('iNaturalist', 'SUN', 'Places', 'Textures')
CONVENTIONS = {'mos', 'cma', 'openood'}


def read_yaml(rel):
    with open(osp.join(REPO, rel)) as f:
        return yaml.safe_load(f)


def read_text(rel):
    with open(osp.join(REPO, rel)) as f:
        return f.read()


INDEX = read_yaml('model-index.yml')
METAFILES = INDEX['Import']
META = {path: read_yaml(path) for path in METAFILES}
MODELS = [model for meta in META.values() for model in meta['Models']]
BY_CONFIG = {model['Config']: model for model in MODELS}


def config_folders():
    return sorted(
        osp.relpath(d, REPO)
        for d in glob.glob(osp.join(REPO, 'configs', '*', ''))
        if osp.basename(osp.dirname(d)) != '_base_')


def results(model, task=None, dataset=None):
    return [
        r for r in model.get('Results') or []
        if (task is None or r['Task'] == task) and (
            dataset is None or r['Dataset'] == dataset)
    ]


def one_result(model, task, dataset):
    found = results(model, task, dataset)
    assert len(found) <= 1, (model['Name'], task, dataset)
    return found[0]['Metrics'] if found else None


def test_index_imports_every_metafile():
    on_disk = sorted(
        osp.relpath(p, REPO)
        for p in glob.glob(osp.join(REPO, 'configs', '*', 'metafile.yml')))
    assert sorted(METAFILES) == on_disk
    assert len(set(METAFILES)) == len(METAFILES)
    assert set(INDEX) == {'Import'}


@pytest.mark.parametrize('folder', config_folders())
def test_every_config_folder_with_a_readme_has_a_metafile(folder):
    has_readme = osp.isfile(osp.join(REPO, folder, 'README.md'))
    has_metafile = osp.isfile(osp.join(REPO, folder, 'metafile.yml'))
    assert has_readme == has_metafile, folder


def test_the_algorithm_folders_have_model_zoo_files():
    for name in ('cma', 'flyp', 'mcm', 'neglabel', 'plp', 'linear-probe'):
        assert f'configs/{name}/metafile.yml' in METAFILES, name


@pytest.mark.parametrize('path', METAFILES)
def test_metafile_names_existing_files_and_every_config(path):
    meta = META[path]
    folder = osp.dirname(path)
    assert set(meta) == {'Collections', 'Models'}
    collections = {c['Name']: c for c in meta['Collections']}
    for collection in collections.values():
        assert collection['README'] == f'{folder}/README.md'
        assert osp.isfile(osp.join(REPO, collection['README']))
        assert collection['Paper']['Title'] and collection['Paper']['URL']
        assert collection['Code']['URL'].startswith('https://github.com/')
    for model in meta['Models']:
        assert model['In Collection'] in collections, model['Name']
        config = model['Config']
        assert osp.dirname(config) == folder, config
        assert osp.isfile(osp.join(REPO, config)), config
        # mmpretrain's naming: the model is named after its config
        assert model['Name'] == osp.basename(config)[:-3]
        assert 'Weights' in model and model['Weights'] is None  # none yet
        assert model['Metadata']['Training Data']
        assert model['Metadata']['Backbone']
        training = model['Metadata'].get('Training Config')
        if training:
            assert osp.isfile(osp.join(REPO, training)), training
    shipped = {
        osp.relpath(p, REPO)
        for p in glob.glob(osp.join(REPO, folder, '*.py'))
    }
    assert {m['Config'] for m in meta['Models']} == shipped


def test_model_names_are_unique():
    names = [model['Name'] for model in MODELS]
    assert len(names) == len(set(names))


@pytest.mark.parametrize('model', MODELS, ids=[m['Name'] for m in MODELS])
def test_results_and_metric_convention(model):
    """OoD results give FPR95 and AUROC; a model with OoD results (or an OoD
    test config) names the metric convention its config's OoDMetric uses."""
    for result in results(model):
        assert result['Task'] in (OOD, CLS), result
        if result['Task'] == OOD:
            assert set(result['Metrics']) == {'FPR95', 'AUROC'}, result
        else:
            assert result['Dataset'] == 'ImageNet-1k'
            assert set(result['Metrics']) == {'Top 1 Accuracy'}, result
        for value in result['Metrics'].values():
            assert isinstance(value, float) and 0 <= value <= 100
    cfg = Config.fromfile(osp.join(REPO, model['Config']),
                          import_custom_modules=False)
    evaluator = cfg.get('test_evaluator') or {}
    convention = model['Metadata'].get('Metric Convention')
    if evaluator.get('type') == 'OoDMetric':
        assert convention == evaluator.get('protocol', 'mos')
    else:
        assert convention is None and not results(model, OOD)
    if results(model, OOD):
        assert convention in CONVENTIONS
        assert one_result(model, OOD, MEAN) is not None


def model_zoo_table(readme):
    """Rows of README.md's table with FPR95, AUROC and ID acc columns, as
    dicts of the header names."""
    lines = readme.splitlines()
    for i, line in enumerate(lines):
        cells = [c.strip() for c in line.strip().strip('|').split('|')]
        if {'config', 'FPR95', 'AUROC', 'ID acc'} <= set(cells):
            header = cells
            break
    else:
        raise AssertionError('README.md has no model-zoo table')
    rows = []
    for line in lines[i + 2:]:
        if not line.startswith('|'):
            break
        cells = [c.strip() for c in line.strip().strip('|').split('|')]
        rows.append(dict(zip(header, cells)))
    return rows


def number(cell):
    return None if cell == '-' else float(cell)


def published(row):
    """The metafile model behind a README row: of the configs it links, the
    one whose metafile entry holds results."""
    linked = re.findall(r'\((configs/[^)]+\.py)\)', row['config'])
    assert linked, row
    models = [BY_CONFIG[path] for path in linked]
    with_results = [m for m in models if results(m)]
    assert len(with_results) == 1, (row['method'], linked)
    return with_results[0]


def test_numbers_equal_the_readme_model_zoo_table():
    readme = read_text('README.md')
    rows = model_zoo_table(readme)
    assert len(rows) >= 4
    seen = set()
    for row in rows:
        model = published(row)
        seen.add(model['Name'])
        mean = one_result(model, OOD, MEAN) or {}
        top1 = one_result(model, CLS, 'ImageNet-1k') or {}
        assert number(row['FPR95']) == mean.get('FPR95'), row['method']
        assert number(row['AUROC']) == mean.get('AUROC'), row['method']
        assert number(row['ID acc']) == top1.get('Top 1 Accuracy'), \
            row['method']
        convention = row['metrics'].strip("`'")
        assert model['Metadata'].get('Metric Convention') == (
            None if convention == '-' else convention), row['method']
    # every published number of the metafiles is in the table
    assert seen == {m['Name'] for m in MODELS if results(m)}

    # the per-set line under the table ("X per MOS set (FPR95 / AUROC, same
    # config): iNaturalist a / b, ..."), for the row named X
    methods = {row['method']: row for row in rows}
    per_set = re.findall(
        r'^([^\n]+?) per MOS set \(FPR95 / AUROC, same config\):(.*?)'
        r'(?:\n\n|\Z)',
        readme, flags=re.M | re.S)
    assert per_set, 'README.md has no per-set line'
    for method, text in per_set:
        model = published(methods[method])
        num = r'(\d+(?:\.\d+)?)'
        pairs = re.findall(
            '(' + '|'.join(MOS_SETS) + rf')\s+{num}\s*/\s*{num}', text)
        assert [name for name, _, _ in pairs] == list(MOS_SETS)
        for name, fpr, auroc in pairs:
            metrics = one_result(model, OOD, f'{name} (MOS)')
            assert metrics == dict(FPR95=float(fpr), AUROC=float(auroc)), \
                (method, name)


def test_every_model_with_ood_results_has_all_mos_sets():
    for model in MODELS:
        if results(model, OOD):
            for name in MOS_SETS:
                assert one_result(model, OOD, f'{name} (MOS)'), (
                    model['Name'], name)


@pytest.mark.parametrize('model', MODELS, ids=[m['Name'] for m in MODELS])
def test_folder_readme_shows_the_model_and_its_numbers(model):
    readme = read_text(f"{osp.dirname(model['Config'])}/README.md")
    rows = [line for line in readme.splitlines()
            if line.startswith('|') and f"`{model['Name']}`" in line]
    assert len(rows) == 1, model['Name']
    shown = sorted(float(x) for x in re.findall(
        r'(?<![\w.-])\d+\.\d+(?![\w.])', rows[0]))
    expected = sorted(value for result in results(model)
                      for value in result['Metrics'].values())
    assert shown == expected, model['Name']


def test_mims_loader_reads_the_index():
    """openmim's `mim search` reads model-index.yml with modelindex."""
    from modelindex.load_model_index import load
    index = load(osp.join(REPO, 'model-index.yml'))
    assert sorted(m.name for m in index.models) == sorted(
        m['Name'] for m in MODELS)
    assert {c.name for c in index.collections} == {
        c['Name'] for meta in META.values() for c in meta['Collections']}
