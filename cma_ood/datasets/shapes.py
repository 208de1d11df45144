"""A procedurally generated image dataset for the CPU demo and tests.

Images are rendered on the fly from a seed per sample (nothing is stored
on disk), so every run sees the same data. ID classes are simple shapes
named by English words, drawn in random colours, sizes, positions and
rotations on random backgrounds. OoD splits: unseen shapes (near-OoD),
and shape-free textures or smoothed colour noise (far-OoD).
"""
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from mmcv.transforms import BaseTransform
from mmpretrain.datasets import BaseDataset
from mmpretrain.registry import DATASETS, TRANSFORMS

ID_SHAPES = ('circle', 'square', 'triangle', 'star', 'cross', 'ring')
NEAR_OOD_SHAPES = ('hexagon', 'heart', 'crescent', 'arrow')
FAR_OOD_KINDS = ('textures', 'noise')
_SPLIT_SEEDS = {'train': 1, 'test': 2, 'val': 3}


def _regular_polygon(n: int, radius: float, rot: float,
                     inner: Optional[float] = None) -> np.ndarray:
    """Vertices (K, 2) of a regular n-gon (a star if ``inner`` is given)."""
    if inner is None:
        angles = rot + np.arange(n) * 2 * np.pi / n
        radii = np.full(n, radius)
    else:
        angles = rot + np.arange(2 * n) * np.pi / n
        radii = np.where(np.arange(2 * n) % 2 == 0, radius, radius * inner)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], 1)


def _rotate(points: np.ndarray, rot: float) -> np.ndarray:
    c, s = np.cos(rot), np.sin(rot)
    return points @ np.array([[c, s], [-s, c]])


def _outline(name: str, radius: float, rot: float) -> List[np.ndarray]:
    """Polygons (centred at 0) whose filled union draws shape ``name``."""
    r = radius
    if name == 'square':
        return [_regular_polygon(4, r * 1.2, rot + np.pi / 4)]
    if name == 'triangle':
        return [_regular_polygon(3, r * 1.2, rot)]
    if name == 'star':
        return [_regular_polygon(5, r * 1.2, rot, inner=0.45)]
    if name == 'hexagon':
        return [_regular_polygon(6, r, rot)]
    if name == 'cross':
        a, b = r, r * 0.35
        pts = np.array([[-b, -a], [b, -a], [b, -b], [a, -b], [a, b], [b, b],
                        [b, a], [-b, a], [-b, b], [-a, b], [-a, -b],
                        [-b, -b]])
        return [_rotate(pts, rot)]
    if name == 'arrow':
        pts = np.array([[-r, -0.25 * r], [0.1 * r, -0.25 * r],
                        [0.1 * r, -0.7 * r], [r, 0], [0.1 * r, 0.7 * r],
                        [0.1 * r, 0.25 * r], [-r, 0.25 * r]])
        return [_rotate(pts, rot)]
    if name == 'heart':
        t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        x = 16 * np.sin(t)**3
        y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) -
              np.cos(4 * t))
        pts = np.stack([x, y], 1) * (r / 16)
        return [_rotate(pts, rot * 0.3)]
    raise KeyError(name)


def _contrasting_colour(rng: np.random.Generator,
                        background: np.ndarray) -> np.ndarray:
    while True:
        colour = rng.uniform(0, 255, size=3)
        if np.abs(colour - background).sum() > 180:
            return colour


def _background(rng: np.random.Generator, size: int) -> Tuple[np.ndarray,
                                                              np.ndarray]:
    base = rng.uniform(0, 255, size=3)
    ramp = np.linspace(-1, 1, size)[:, None, None] * rng.uniform(-25, 25, 3)
    img = np.broadcast_to(base + ramp, (size, size, 3)).copy()
    img += rng.normal(0, 6, size=img.shape)
    return img, base


def render_shape(name: str, rng: np.random.Generator,
                 size: int = 32) -> np.ndarray:
    """Render one ``size x size`` uint8 BGR image of shape ``name``."""
    img, base = _background(rng, size)
    colour = tuple(float(c) for c in _contrasting_colour(rng, base))
    radius = rng.uniform(0.22, 0.42) * size
    centre = rng.uniform(radius, size - radius, size=2)
    rot = rng.uniform(0, 2 * np.pi)
    shift = 4  # sub-pixel precision bits of cv2's drawing functions
    to_fixed = (lambda p: np.round(p * (1 << shift)).astype(np.int32))
    if name in ('circle', 'ring', 'crescent'):
        c = tuple(int(v) for v in to_fixed(centre))
        cv2.circle(img, c, int(radius * (1 << shift)), colour, -1,
                   cv2.LINE_AA, shift)
        if name != 'circle':
            hole = radius * (0.55 if name == 'ring' else 0.85)
            offset = 0 if name == 'ring' else radius * 0.45
            hc = centre + offset * np.array([np.cos(rot), np.sin(rot)])
            cv2.circle(img, tuple(int(v) for v in to_fixed(hc)),
                       int(hole * (1 << shift)), tuple(float(v)
                                                       for v in base), -1,
                       cv2.LINE_AA, shift)
    else:
        polys = [to_fixed(p + centre) for p in _outline(name, radius, rot)]
        cv2.fillPoly(img, polys, colour, cv2.LINE_AA, shift)
    return np.clip(img, 0, 255).astype(np.uint8)


def render_far_ood(kind: str, rng: np.random.Generator,
                   size: int = 32) -> np.ndarray:
    """Render a shape-free image: ``'textures'`` (stripes, checks, dots)
    or ``'noise'`` (smoothed colour noise)."""
    if kind == 'noise':
        small = rng.uniform(0, 255, size=(rng.integers(2, 9), ) * 2 + (3, ))
        img = cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)
        img += rng.normal(0, 12, size=img.shape)
        return np.clip(img, 0, 255).astype(np.uint8)
    if kind != 'textures':
        raise KeyError(kind)
    a, b = rng.uniform(0, 255, size=(2, 3))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    period = rng.uniform(3, 9)
    theta = rng.uniform(0, np.pi)
    u = xx * np.cos(theta) + yy * np.sin(theta)
    v = -xx * np.sin(theta) + yy * np.cos(theta)
    pattern = rng.integers(3)
    if pattern == 0:  # stripes
        mask = np.sin(2 * np.pi * u / period) > 0
    elif pattern == 1:  # checkerboard
        mask = (np.floor(u / period) + np.floor(v / period)) % 2 == 0
    else:  # dots
        mask = (np.sin(2 * np.pi * u / period) *
                np.sin(2 * np.pi * v / period)) > 0.5
    img = np.where(mask[..., None], a, b) + rng.normal(0, 8, (size, size, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


@DATASETS.register_module()
class ShapesDataset(BaseDataset):
    """Procedurally generated shapes (see module doc).

    Args:
        split (str): ``'train'``, ``'val'`` or ``'test'`` (different seeds
            of the same ID classes), ``'near_ood'`` (unseen shapes) or one
            of ``'textures'``, ``'noise'`` (far-OoD).
        num_per_class (int): images per class (per kind for far-OoD).
        classes (sequence[str], optional): the shapes drawn; defaults to
            :data:`ID_SHAPES` for ID splits and :data:`NEAR_OOD_SHAPES` for
            ``'near_ood'``.
        img_size (int): side of the square images.
        seed (int): base seed of the generator.
        pipeline (list): transforms after rendering; images are uint8 BGR
            ``(H, W, 3)`` in ``results['img']``, as ``LoadImageFromFile``
            gives them.
    """

    def __init__(self,
                 split: str = 'train',
                 num_per_class: int = 100,
                 classes: Optional[Sequence[str]] = None,
                 img_size: int = 32,
                 seed: int = 0,
                 pipeline: Sequence = (),
                 test_mode: bool = False,
                 **kwargs):
        valid = (*_SPLIT_SEEDS, 'near_ood', *FAR_OOD_KINDS)
        if split not in valid:
            raise ValueError(f'ShapesDataset: unknown split {split!r}, '
                             f'choose from {valid}')
        if num_per_class < 1:
            raise ValueError('ShapesDataset: num_per_class must be >= 1')
        if classes is None:
            classes = NEAR_OOD_SHAPES if split == 'near_ood' else ID_SHAPES
        self.split = split
        self.num_per_class = num_per_class
        self.img_size = img_size
        self.seed = seed
        self._far = split in FAR_OOD_KINDS
        super().__init__(
            ann_file='',
            metainfo=dict(classes=tuple(classes)),
            pipeline=pipeline,
            test_mode=test_mode,
            **kwargs)

    def load_data_list(self) -> List[dict]:
        num_classes = 1 if self._far else len(self.CLASSES)
        label_of = (lambda c: -1) if self._far or self.split == 'near_ood' \
            else (lambda c: c)
        return [
            dict(gt_label=label_of(c), shape_idx=c)
            for c in range(num_classes) for _ in range(self.num_per_class)
        ]

    def get_data_info(self, idx: int) -> Dict:
        info = super().get_data_info(idx)
        split_key = _SPLIT_SEEDS.get(self.split, 0) if not self._far else 0
        rng = np.random.default_rng(
            [self.seed, split_key, hash_split(self.split), idx])
        kind = self.split if self._far else self.CLASSES[info['shape_idx']]
        img = _render(kind, rng, self.img_size)
        info.update(
            img=img,
            img_shape=img.shape[:2],
            ori_shape=img.shape[:2],
            render_kind=kind)
        return info


def _render(kind: str, rng: np.random.Generator, size: int) -> np.ndarray:
    if kind in FAR_OOD_KINDS:
        return render_far_ood(kind, rng, size)
    return render_shape(kind, rng, size)


@TRANSFORMS.register_module()
class RedrawShape(BaseTransform):
    """Replace a :class:`ShapesDataset` sample by a new drawing of the same
    shape (or far-OoD kind): new colours, size, position, rotation and
    background.

    The drawing is seeded from numpy's global generator, which
    :class:`~cma_ood.engine.ResumableEpochBasedTrainLoop` seeds per
    ``(seed, epoch, sample index)``: each epoch trains on images not seen
    before, reproducibly and independently of the number of dataloader
    workers. Used by the CPU demo, whose training from scratch is much less
    sensitive to floating-point differences between machines when it never
    sees an image twice (docs/fidelity.md, "The CPU demo").

    Required keys: ``img``, ``render_kind``. Modified keys: ``img``,
    ``img_shape``.
    """

    def transform(self, results: dict) -> dict:
        if 'render_kind' not in results:
            raise KeyError('RedrawShape: the sample has no "render_kind"; '
                           'use it only in the pipeline of a ShapesDataset')
        size = results['img'].shape[0]
        rng = np.random.default_rng(
            np.random.randint(0, 2**32, size=4, dtype=np.uint64))
        img = _render(results['render_kind'], rng, size)
        results.update(img=img, img_shape=img.shape[:2])
        return results


def hash_split(split: str) -> int:
    """A stable integer for a split name (Python's ``hash`` is salted)."""
    return int.from_bytes(split.encode()[:8].ljust(8, b'\0'), 'little')
