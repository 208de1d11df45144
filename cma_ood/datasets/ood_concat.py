"""One test dataset holding the ID set and every OoD set of a benchmark."""
import bisect
import copy
from typing import Dict, List, Mapping, Union

from mmpretrain.registry import DATASETS
from torch.utils.data import Dataset


@DATASETS.register_module()
class OoDConcatDataset(Dataset):
    """Concatenate an ID dataset and named OoD datasets, tagging samples.

    Every item's ``data_samples`` gets the metainfo ``ood_source`` (the name
    of the set it came from: ``id_name`` or an OoD set's name) and
    ``ood_index`` (its index in this concatenation), which ``OoDMetric``
    groups by. ``metainfo`` is the ID dataset's (its classes are the ID
    classes).

    Args:
        id_dataset (dict | Dataset): the ID test set.
        ood_datasets (Mapping[str, dict | Dataset]): OoD sets by name, in
            table order.
        id_name (str): source name of the ID samples. Defaults to ``'ID'``.
        ood_groups (Mapping[str, list[str]], optional): named groups of OoD
            sets reported as group means, e.g. ``dict(near=[...],
            far=[...])``; exposed as ``metainfo['ood_groups']``.
    """

    def __init__(self,
                 id_dataset: Union[dict, Dataset],
                 ood_datasets: Mapping[str, Union[dict, Dataset]],
                 id_name: str = 'ID',
                 ood_groups: Mapping[str, List[str]] = None):
        if not ood_datasets:
            raise ValueError('OoDConcatDataset needs at least one OoD set')
        if id_name in ood_datasets:
            raise ValueError(f'OoD set name {id_name!r} clashes with the ID '
                             'set name')
        self.id_name = id_name
        self.names = [id_name, *ood_datasets]
        self.datasets = [
            self._build(d) for d in (id_dataset, *ood_datasets.values())
        ]
        groups = {k: list(v) for k, v in (ood_groups or {}).items()}
        for group, members in groups.items():
            unknown = [m for m in members if m not in ood_datasets]
            if unknown:
                raise ValueError(f'ood_groups[{group!r}] names unknown OoD '
                                 f'sets {unknown}; known: '
                                 f'{list(ood_datasets)}')
        self._metainfo = dict(
            copy.deepcopy(getattr(self.datasets[0], 'metainfo', {})),
            ood_sources=tuple(self.names),
            id_source=id_name,
            ood_groups=groups)
        self._fully_initialized = False
        self.full_init()

    @staticmethod
    def _build(dataset):
        return DATASETS.build(dataset) if isinstance(dataset,
                                                     dict) else dataset

    def full_init(self) -> None:
        if self._fully_initialized:
            return
        for name, dataset in zip(self.names, self.datasets):
            if hasattr(dataset, 'full_init'):
                dataset.full_init()
            if len(dataset) == 0:
                raise ValueError(f'The {name!r} dataset of the OoD benchmark '
                                 f'({type(dataset).__name__}) is empty')
        self.cumulative_sizes = []
        total = 0
        for dataset in self.datasets:
            total += len(dataset)
            self.cumulative_sizes.append(total)
        self._fully_initialized = True

    @property
    def metainfo(self) -> Dict:
        return copy.deepcopy(self._metainfo)

    def __len__(self) -> int:
        return self.cumulative_sizes[-1]

    def locate(self, idx: int):
        """Return ``(source name, dataset, index in that dataset)``."""
        if idx < 0:
            idx += len(self)
        if not 0 <= idx < len(self):
            raise IndexError(f'index {idx} out of range for {len(self)}')
        k = bisect.bisect_right(self.cumulative_sizes, idx)
        start = self.cumulative_sizes[k - 1] if k else 0
        return self.names[k], self.datasets[k], idx - start

    def source_sizes(self) -> Dict[str, int]:
        """Number of samples per source."""
        return {n: len(d) for n, d in zip(self.names, self.datasets)}

    def __getitem__(self, idx: int):
        name, dataset, local_idx = self.locate(idx)
        data = dataset[local_idx]
        data['data_samples'].set_metainfo(
            dict(ood_source=name, ood_index=idx if idx >= 0 else idx +
                 len(self)))
        return data
