"""One test dataset holding the ID set and every OoD set of a benchmark."""
import bisect
import copy
import os.path as osp
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Mapping, Optional, Sequence, Union

from mmengine.dataset import BaseDataset as MMBaseDataset
from mmengine.fileio import LocalBackend, get_file_backend
from mmengine.logging import print_log
from mmpretrain.registry import DATASETS
from torch.utils.data import Dataset

from .image_check import CheckedLoadImageFromFile  # noqa: F401 (registers)
from .image_check import image_file_problem


def _is_local(path: str) -> bool:
    return isinstance(
        get_file_backend(path, enable_singleton=True), LocalBackend)


def sample_paths(dataset) -> Optional[List[Optional[str]]]:
    """``img_path`` of every sample as stored in the dataset's annotations,
    without running its pipeline; ``None`` for datasets that are not
    MMEngine ``BaseDataset``s or have no image files (generated data)."""
    if not isinstance(dataset, MMBaseDataset):
        return None
    paths = [
        MMBaseDataset.get_data_info(dataset, i).get('img_path')
        for i in range(len(dataset))
    ]
    return paths if any(p is not None for p in paths) else None


def _with_context(err: Exception, message: str) -> Exception:
    """An exception of ``err``'s type with ``message``, or ``err`` itself
    where that type cannot be built from a message alone."""
    try:
        return type(err)(message)
    except Exception:
        return err


class _Resolver:
    """Resolve local paths (symlinked directories and files) to real paths,
    each directory once."""

    def __init__(self):
        self._dirs: Dict[str, str] = {}

    def __call__(self, path: str) -> str:
        if not _is_local(path):
            return path
        path = osp.abspath(path)
        if osp.islink(path):
            return osp.realpath(path)
        head, tail = osp.split(path)
        if head not in self._dirs:
            self._dirs[head] = osp.realpath(head)
        return osp.join(self._dirs[head], tail)


@DATASETS.register_module()
class OoDConcatDataset(Dataset):
    """Concatenate an ID dataset and named OoD datasets, tagging samples.

    Every item's ``data_samples`` gets the metainfo ``ood_source`` (the name
    of the set it came from: ``id_name`` or an OoD set's name) and
    ``ood_index`` (its index in this concatenation), which ``OoDMetric``
    groups by. ``metainfo`` is the ID dataset's (its classes are the ID
    classes).

    Checks, each an error naming the set: a missing ``data_root`` of a set
    given as a config, a set that cannot be built or is empty, and (with
    ``check_overlap``) an OoD set holding image files of the ID set. Files
    are compared by resolved path (symbolic links followed); copies of an
    image under other names are not detected. A sample that fails to load
    raises an error naming its set and file.

    With ``skip_broken=True`` every image file is checked when the dataset
    is built (read in full, decoded at 1/8 resolution, see
    :func:`~cma_ood.datasets.image_check.image_problem`); unreadable,
    truncated and non-image files are left out with a warning naming them,
    and their number per set is exposed as ``metainfo['skipped_images']``
    (and ``skipped``: the files and reasons).

    Args:
        id_dataset (dict | Dataset): the ID test set.
        ood_datasets (Mapping[str, dict | Dataset]): OoD sets by name, in
            table order.
        id_name (str): source name of the ID samples. Defaults to ``'ID'``.
        ood_groups (Mapping[str, list[str]], optional): named groups of OoD
            sets reported as group means, e.g. ``dict(near=[...],
            far=[...])``; exposed as ``metainfo['ood_groups']``.
        skip_broken (bool): check all images up front and skip broken ones
            (see above). Defaults to False: a broken image is an error when
            it is loaded (with ``CheckedLoadImageFromFile`` in the pipeline
            also a truncated one).
        check_overlap (bool): refuse OoD sets sharing files with the ID
            set. Defaults to True.
        scan_workers (int): threads checking images with ``skip_broken``.
        pipeline (list[dict], optional): one pipeline for every set given
            as a config (a benchmark's protocol preprocesses all its sets
            alike); those configs must then not name a pipeline of their
            own. ``None``: each set keeps its own.
    """

    def __init__(self,
                 id_dataset: Union[dict, Dataset],
                 ood_datasets: Mapping[str, Union[dict, Dataset]],
                 id_name: str = 'ID',
                 ood_groups: Mapping[str, List[str]] = None,
                 skip_broken: bool = False,
                 check_overlap: bool = True,
                 scan_workers: int = 8,
                 pipeline: Optional[Sequence[dict]] = None):
        if not ood_datasets:
            raise ValueError('OoDConcatDataset needs at least one OoD set')
        if id_name in ood_datasets:
            raise ValueError(f'OoD set name {id_name!r} clashes with the ID '
                             'set name')
        groups = {k: list(v) for k, v in (ood_groups or {}).items()}
        for group, members in groups.items():
            unknown = [m for m in members if m not in ood_datasets]
            if unknown:
                raise ValueError(f'ood_groups[{group!r}] names unknown OoD '
                                 f'sets {unknown}; known: '
                                 f'{list(ood_datasets)}')
        self.id_name = id_name
        self.names = [id_name, *ood_datasets]
        self.skip_broken = skip_broken
        self.check_overlap = check_overlap
        self.scan_workers = max(1, int(scan_workers))
        self.pipeline = None if pipeline is None else list(pipeline)
        self.datasets = [
            self._build(name, d) for name, d in zip(
                self.names, (id_dataset, *ood_datasets.values()))
        ]
        self._metainfo = dict(
            copy.deepcopy(getattr(self.datasets[0], 'metainfo', {})),
            ood_sources=tuple(self.names),
            id_source=id_name,
            ood_groups=groups)
        self.skipped: Dict[str, List[tuple]] = {}
        self._fully_initialized = False
        self.full_init()

    def _describe(self, name: str) -> str:
        return f'the ID set {name!r}' if name == self.id_name else \
            f'the OoD set {name!r}'

    def _build(self, name: str, dataset):
        if not isinstance(dataset, dict):
            if self.pipeline is not None:
                raise ValueError(
                    f'OoDConcatDataset: {self._describe(name)} is a built '
                    f'{type(dataset).__name__}, so the shared pipeline '
                    'cannot be applied to it; give it as a config dict or '
                    'leave pipeline=None')
            return dataset
        if self.pipeline is not None:
            if dataset.get('pipeline'):
                raise ValueError(
                    f'OoDConcatDataset: {self._describe(name)} has a '
                    'pipeline of its own and the benchmark has a shared '
                    'one; remove one of them')
            dataset = dict(dataset, pipeline=copy.deepcopy(self.pipeline))
        root = dataset.get('data_root')
        if isinstance(root, str) and root and _is_local(root) and \
                not osp.isdir(root):
            raise FileNotFoundError(
                f'OoDConcatDataset: data_root of {self._describe(name)} not '
                f'found: {root} ({dataset.get("type")}); fix the path or '
                'see docs/data_preparation.md')
        try:
            return DATASETS.build(dataset)
        except (OSError, RuntimeError, ValueError, AssertionError) as err:
            # mmpretrain reports bad folders with assertions, e.g.
            # ImageNet's "number of subfolders (6) doesn't match ... (1000)"
            hint = ''
            if 'number of specified classes' in str(err):
                hint = ('; for your own class folders use '
                        "type='CustomDataset' (class names from the folder "
                        'names, docs/custom_data.md)')
            raise _with_context(
                err, f'OoDConcatDataset: cannot build {self._describe(name)} '
                f'({dataset.get("type")}): {err}{hint}') from err

    def full_init(self) -> None:
        if self._fully_initialized:
            return
        for name, dataset in zip(self.names, self.datasets):
            if hasattr(dataset, 'full_init'):
                dataset.full_init()
            if len(dataset) == 0:
                raise ValueError(f'The {name!r} dataset of the OoD benchmark '
                                 f'({type(dataset).__name__}) is empty')
        paths = [sample_paths(d) for d in self.datasets]
        if self.check_overlap:
            self._check_overlap(paths)
        self._index_maps: List[Optional[List[int]]] = [None] * len(paths)
        if self.skip_broken:
            self._skip_broken(paths)
        self._paths = paths
        self.cumulative_sizes = []
        total = 0
        for name in self.names:
            total += self.source_sizes()[name]
            self.cumulative_sizes.append(total)
        self._fully_initialized = True

    def _check_overlap(self, paths: Sequence[Optional[List]]) -> None:
        if paths[0] is None:
            return
        resolve = _Resolver()
        id_files = {resolve(p) for p in paths[0] if p is not None}
        for name, ood_paths in zip(self.names[1:], paths[1:]):
            if ood_paths is None:
                continue
            shared = [p for p in ood_paths
                      if p is not None and resolve(p) in id_files]
            if shared:
                id_set = self._describe(self.id_name)
                raise ValueError(
                    f'OoDConcatDataset: {self._describe(name)} shares '
                    f'{len(shared)} image file(s) with {id_set}, e.g. '
                    f'{shared[0]}; an image cannot be both in- and '
                    'out-of-distribution: remove it from one of the sets (or '
                    'set check_overlap=False)')

    def _skip_broken(self, paths: Sequence[Optional[List]]) -> None:
        skipped_counts = {}
        with ThreadPoolExecutor(self.scan_workers) as pool:
            for k, (name, set_paths) in enumerate(zip(self.names, paths)):
                if set_paths is None:
                    continue
                problems = list(
                    pool.map(
                        lambda p: None if p is None else image_file_problem(
                            p), set_paths))
                broken = [(set_paths[i], why) for i, why in
                          enumerate(problems) if why is not None]
                if not broken:
                    continue
                self._index_maps[k] = [
                    i for i, why in enumerate(problems) if why is None
                ]
                self.skipped[name] = broken
                skipped_counts[name] = len(broken)
                examples = '; '.join(f'{p}: {why}' for p, why in broken[:3])
                print_log(
                    f'OoDConcatDataset: skipped {len(broken)} of '
                    f'{len(set_paths)} images of {self._describe(name)} '
                    f'(skip_broken=True): {examples}'
                    f'{" ..." if len(broken) > 3 else ""}',
                    logger='current',
                    level=30)
                if not self._index_maps[k]:
                    raise ValueError(
                        f'OoDConcatDataset: every image of '
                        f'{self._describe(name)} is broken, e.g. '
                        f'{examples}')
        self._metainfo['skipped_images'] = skipped_counts

    @property
    def metainfo(self) -> Dict:
        return copy.deepcopy(self._metainfo)

    def __len__(self) -> int:
        return self.cumulative_sizes[-1]

    def source_sizes(self) -> Dict[str, int]:
        """Number of samples per source (broken images skipped)."""
        return {
            n: len(d) if m is None else len(m)
            for n, d, m in zip(self.names, self.datasets, self._index_maps)
        }

    def locate(self, idx: int):
        """Return ``(source name, dataset, index in that dataset)``."""
        if idx < 0:
            idx += len(self)
        if not 0 <= idx < len(self):
            raise IndexError(f'index {idx} out of range for {len(self)}')
        k = bisect.bisect_right(self.cumulative_sizes, idx)
        start = self.cumulative_sizes[k - 1] if k else 0
        local = idx - start
        if self._index_maps[k] is not None:
            local = self._index_maps[k][local]
        return self.names[k], self.datasets[k], local

    def _path_of(self, name: str, local_idx: int) -> str:
        paths = self._paths[self.names.index(name)]
        path = None if paths is None else paths[local_idx]
        return f'sample {local_idx}' if path is None else str(path)

    def __getitem__(self, idx: int):
        name, dataset, local_idx = self.locate(idx)
        try:
            data = dataset[local_idx]
        except (OSError, AssertionError, RuntimeError, ValueError) as err:
            raise _with_context(
                err, f'OoDConcatDataset: loading '
                f'{self._path_of(name, local_idx)} of {self._describe(name)}'
                f' failed: {err}') from err
        data['data_samples'].set_metainfo(
            dict(ood_source=name, ood_index=idx if idx >= 0 else idx +
                 len(self)))
        return data
