"""Datasets listed by image-list files (OpenOOD v1.5 ``benchmark_imglist``)."""
import os.path as osp
from typing import List, Optional, Tuple

from mmengine.fileio import LocalBackend, exists, get_file_backend, get_text
from mmpretrain.datasets import BaseDataset
from mmpretrain.registry import DATASETS


def parse_image_list_line(line: str) -> Tuple[str, Optional[int]]:
    """Split ``"relative/path label"`` into ``(path, label)``.

    The label is the last whitespace-separated token when it is an integer
    (paths may contain spaces); a line without one gives ``(path, None)``.
    """
    line = line.strip()
    parts = line.rsplit(maxsplit=1)
    if len(parts) == 2:
        try:
            return parts[0].strip(), int(parts[1])
        except ValueError:
            pass
    return line, None


@DATASETS.register_module()
class ImageListDataset(BaseDataset):
    """Images listed in a text file, one ``relative/path [label]`` per line.

    This is the format of OpenOOD v1.5's
    ``benchmark_imglist/imagenet/test_*.txt``. Paths are relative to the
    image root ``data_root/data_prefix`` (e.g. ``data_root='data/openood'``,
    ``data_prefix='images_largescale'``); a relative ``ann_file`` is taken
    relative to ``data_root``, as everywhere in MMEngine. Blank lines are
    skipped.

    Labels are ignored by default, as OoD sets need none: every sample gets
    ``gt_label = -1`` (which ``OoDMetric`` leaves out of the accuracy).
    With ``with_label=True`` the integer label of each line is kept and a
    line without one is an error.

    Args:
        ann_file (str): the image-list file.
        data_root (str): root of ``ann_file`` (if relative) and of the
            images.
        data_prefix (str | dict): image directory under ``data_root``.
        with_label (bool): keep the labels of the list. Defaults to False.
        **kwargs: other arguments of mmpretrain's ``BaseDataset``
            (``pipeline``, ``test_mode``, ``metainfo``, ...).

    Raises:
        FileNotFoundError: naming the missing list file or image root.
        ValueError: for an empty list, or a missing label with
            ``with_label=True``.
    """

    def __init__(self,
                 ann_file: str,
                 data_root: str = '',
                 data_prefix='',
                 with_label: bool = False,
                 **kwargs):
        if not ann_file:
            raise ValueError('ImageListDataset needs an ann_file (the image '
                             'list)')
        self.with_label = with_label
        super().__init__(
            ann_file=ann_file,
            data_root=data_root,
            data_prefix=data_prefix,
            **kwargs)

    def _check_paths(self) -> None:
        if not exists(self.ann_file):
            hint = (f' (relative ann_file paths are joined to data_root '
                    f'{self.data_root!r})' if self.data_root else '')
            raise FileNotFoundError(
                f'{type(self).__name__}: image list file not found: '
                f'{self.ann_file}{hint}. See docs/data_preparation.md')
        root = self.img_prefix or '.'
        backend = get_file_backend(root, enable_singleton=True)
        if isinstance(backend, LocalBackend) and not osp.isdir(root):
            raise FileNotFoundError(
                f'{type(self).__name__}: image root not found: {root} '
                f'(listed by {self.ann_file}). See docs/data_preparation.md')

    def load_data_list(self) -> List[dict]:
        self._check_paths()
        backend = get_file_backend(self.img_prefix or '.',
                                   enable_singleton=True)
        data_list = []
        for lineno, line in enumerate(get_text(self.ann_file).splitlines(),
                                      1):
            if not line.strip():
                continue
            path, label = parse_image_list_line(line)
            if self.with_label and label is None:
                raise ValueError(f'{self.ann_file}:{lineno}: no integer '
                                 f'label in {line!r} (with_label=True)')
            img_path = backend.join_path(self.img_prefix, path) \
                if self.img_prefix else path
            data_list.append(
                dict(
                    img_path=img_path,
                    gt_label=label if self.with_label else -1))
        if not data_list:
            raise ValueError(f'image list {self.ann_file} lists no images')
        return data_list

    def extra_repr(self) -> List[str]:
        return [
            f'Annotation file: \t{self.ann_file}',
            f'Prefix of images: \t{self.img_prefix}'
        ]
