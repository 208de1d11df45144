"""Contact sheets: the images a score gets most wrong (functional core).

For one score and one OoD set a sheet shows, left, the OoD images scored
*most* ID-like (the first false acceptances as the threshold is lowered)
and, right, the ID images scored *least* ID-like (the first false
rejections), each with its rank, score, top-1 ID class and cosine, and,
for scorers that report them, the negative label it matched best.

- :func:`select_extremes`: which images (pure; ties by dataset index).
- :func:`merge_extremes`: the running version, one batch at a time.
- :func:`make_thumbnail`: a small uint8 RGB copy of one input image.
- :func:`contact_sheet_figure`: the figure (no file IO).

:class:`~cma_ood.evaluation.OoDMetric` keeps the running selection and the
thumbnails while it processes batches and
:func:`~cma_ood.evaluation.outputs.write_ood_outputs` saves the sheets as
``ood_plots/contact_{score}_{set}.png``.
"""
import heapq
import math
from typing import List, Mapping, Optional, Sequence, Tuple

import numpy as np

#: Images per side of a sheet.
CONTACT_COUNT = 16
#: Longest side of a stored thumbnail, in pixels.
THUMBNAIL_SIZE = 96
#: Resolution of the sheet PNGs (their content is raster; no PDF).
CONTACT_DPI = 100
#: Tiles per row in each half of a sheet.
TILE_COLUMNS = 4
#: Geometry of one tile in mosaic pixels: image slot (square), horizontal
#: gap, caption band and vertical gap.
_SLOT, _GAP_X, _CAPTION, _GAP_Y = 96, 12, 42, 6
#: Display pixels per mosaic pixel at :data:`CONTACT_DPI`.
_ZOOM = 1.4


def extreme_key(score: float, index: int, most_id_like: bool) -> tuple:
    """Sort key of one image: ascending keys come first. ``most_id_like``:
    highest score first (OoD images); otherwise lowest first (ID images);
    equal scores by ascending dataset ``index``."""
    return (-score, index) if most_id_like else (score, index)


def select_extremes(scores: Sequence[float], indices: Sequence[int],
                    count: int = CONTACT_COUNT,
                    most_id_like: bool = True) -> np.ndarray:
    """Positions of the ``count`` images to show (pure).

    Args:
        scores: (N,) finite scores, higher = more ID.
        indices: (N,) distinct dataset indices (break ties: lower first).
        count: how many to return (fewer if N is smaller).
        most_id_like: True for the highest scores (OoD side), False for
            the lowest (ID side).

    Returns:
        (min(count, N),) int64 positions into ``scores``, best first.
    """
    s = np.asarray(scores, dtype=np.float64)
    idx = np.asarray(indices, dtype=np.int64)
    if s.shape != idx.shape or s.ndim != 1:
        raise ValueError('select_extremes: scores and indices must be 1-D '
                         f'of one length, got {s.shape} and {idx.shape}')
    primary = -s if most_id_like else s
    order = np.lexsort((idx, primary))
    return order[:count]


def merge_extremes(current: List[Tuple[tuple, int]],
                   candidates: Sequence[Tuple[float, int]],
                   count: int = CONTACT_COUNT,
                   most_id_like: bool = True) -> List[Tuple[tuple, int]]:
    """One step of the running :func:`select_extremes`.

    Args:
        current: the selection so far, ``[(key, index)]`` sorted by key
            (:func:`extreme_key`), at most ``count`` long.
        candidates: ``[(score, index)]`` of new images; non-finite scores
            and indices already in ``current`` are ignored (a distributed
            sampler's padding repeats images).
        count, most_id_like: as in :func:`select_extremes`.

    Returns:
        the new selection, same form. Fed every image once (in any order
        and batching), it equals :func:`select_extremes` of all of them.
    """
    held = {i for _, i in current}
    worst = current[-1][0] if len(current) >= count else None
    merged = list(current)
    for score, index in candidates:
        if index in held or not math.isfinite(score):
            continue
        key = extreme_key(score, index, most_id_like)
        if worst is not None and key >= worst:
            continue
        merged.append((key, index))
        held.add(index)
    return heapq.nsmallest(count, merged)


def make_thumbnail(image, size: int = THUMBNAIL_SIZE,
                   bgr: bool = True) -> np.ndarray:
    """A small RGB copy of one input image.

    Args:
        image: (C, H, W) tensor or array as the dataloader hands it over
            (uint8 0-255; float values are clipped to 0-255), C = 1 or 3;
            or (H, W, C) numpy uint8 (a decoded file).
        size: the longest side of the result (never enlarged).
        bgr: the channels are in BGR order (mmpretrain's loaders and
            ``PackInputs``); False for RGB.

    Returns:
        (h, w, 3) uint8 RGB with ``max(h, w) <= size``.
    """
    import cv2
    if hasattr(image, 'detach'):
        image = image.detach().cpu().numpy()
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (
            1, 3):
        arr = arr.transpose(1, 2, 0)
    elif arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3):
        raise ValueError('make_thumbnail: expected a (C, H, W) or (H, W, C) '
                         f'image with 1 or 3 channels, got {arr.shape}')
    if arr.dtype != np.uint8:
        arr = np.clip(np.rint(arr.astype(np.float64)), 0, 255).astype(
            np.uint8)
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    elif bgr:
        arr = arr[..., ::-1]
    h, w = arr.shape[:2]
    scale = min(1.0, size / max(h, w))
    if scale < 1.0:
        arr = cv2.resize(np.ascontiguousarray(arr),
                         (max(1, round(w * scale)), max(1, round(h * scale))),
                         interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(arr)


def format_score(score: float) -> str:
    """Score text for a caption: 4 significant digits, and scores just
    below 1 (NegLabel's ID-like images) as ``1-3.2e-05``."""
    if 0.999 < score < 1.0:
        return f'1-{1.0 - score:.1e}'
    return f'{score:.4g}'


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + '~'


def tile_caption(item: Mapping, rank: int) -> str:
    """Caption of one tile: rank and score, top-1 ID class and cosine, and
    the best-matching negative label where the scorer reports one.

    ``item`` holds ``score`` and optionally ``pred_class``, ``pred_cos``,
    ``negative`` (see :func:`contact_sheet_figure`)."""
    lines = [f"#{rank}  s={format_score(float(item['score']))}"]
    pred = item.get('pred_class')
    if pred is not None:
        cos = item.get('pred_cos')
        lines.append(_clip(str(pred), 19 if cos is None else 13) + (
            '' if cos is None else f' ({cos:.2f})'))
    neg = item.get('negative')
    if neg:
        lines.append('neg: ' + _clip(str(neg), 14))
    return '\n'.join(lines)


def _rows(count: int) -> int:
    return max(1, math.ceil(count / TILE_COLUMNS))


def _half_pixels(count: int) -> Tuple[int, int]:
    """(width, height) in mosaic pixels of one half of a sheet."""
    return (TILE_COLUMNS * (_SLOT + _GAP_X),
            _rows(count) * (_SLOT + _CAPTION + _GAP_Y))


def contact_sheet_pixels(count: int = CONTACT_COUNT) -> Tuple[int, int]:
    """(width, height) in pixels of a sheet with ``count`` images per side
    saved at :data:`CONTACT_DPI`."""
    w, h = _half_pixels(count)
    return (round(2 * w * _ZOOM) + 70, round(h * _ZOOM) + 75)


def contact_sheet_size(count: int = CONTACT_COUNT) -> Tuple[float, float]:
    """Figure size (inches) of a sheet with ``count`` images per side (half
    a pixel more than :func:`contact_sheet_pixels`: matplotlib truncates
    the size in pixels)."""
    w, h = contact_sheet_pixels(count)
    return (w + 0.5) / CONTACT_DPI, (h + 0.5) / CONTACT_DPI


def _fit(thumb: np.ndarray, slot: int) -> np.ndarray:
    """``thumb`` resized (aspect kept) to fit a ``slot`` square: enlarged
    by nearest neighbour (pixels stay visible), shrunk by area."""
    import cv2
    h, w = thumb.shape[:2]
    scale = slot / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    if size == (w, h):
        return thumb
    return cv2.resize(np.ascontiguousarray(thumb), size,
                      interpolation=cv2.INTER_NEAREST
                      if scale > 1 else cv2.INTER_AREA)


def half_mosaic(items: Sequence[Mapping],
                count: int = CONTACT_COUNT) -> np.ndarray:
    """The tiles of one side as one RGB uint8 image (white background,
    grey frames, "no image" tiles light grey; caption bands left blank).

    Returns:
        (H, W, 3) uint8 of :func:`_half_pixels`.
    """
    w, h = _half_pixels(count)
    mosaic = np.full((h, w, 3), 255, np.uint8)
    for k, item in enumerate(items[:count]):
        row, col = divmod(k, TILE_COLUMNS)
        y0 = row * (_SLOT + _CAPTION + _GAP_Y)
        x0 = col * (_SLOT + _GAP_X) + _GAP_X // 2
        mosaic[y0:y0 + _SLOT, x0:x0 + _SLOT] = 150  # frame
        mosaic[y0 + 1:y0 + _SLOT - 1, x0 + 1:x0 + _SLOT - 1] = 255
        thumb = item.get('thumb')
        if thumb is None:
            mosaic[y0 + 1:y0 + _SLOT - 1, x0 + 1:x0 + _SLOT - 1] = 215
            continue
        img = _fit(np.asarray(thumb, np.uint8), _SLOT - 2)
        ih, iw = img.shape[:2]
        ty = y0 + 1 + (_SLOT - 2 - ih) // 2
        tx = x0 + 1 + (_SLOT - 2 - iw) // 2
        mosaic[ty:ty + ih, tx:tx + iw] = img
    return mosaic


def _draw_half(fig, rect, items: Sequence[Mapping], count: int,
               title: str) -> None:
    """One side of the sheet inside ``rect`` (figure fractions ``left,
    bottom, width, height``): the mosaic and the captions."""
    ax = fig.add_axes(rect)
    w, h = _half_pixels(count)
    ax.imshow(half_mosaic(items, count), interpolation='antialiased',
              extent=(0, w, h, 0))
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.set_axis_off()
    ax.set_title(title, fontsize=9, weight='bold')
    for k, item in enumerate(items[:count]):
        row, col = divmod(k, TILE_COLUMNS)
        x = col * (_SLOT + _GAP_X) + (_SLOT + _GAP_X) / 2
        y = row * (_SLOT + _CAPTION + _GAP_Y) + _SLOT + 2
        if item.get('thumb') is None:
            ax.text(x, y - _SLOT / 2, 'no image', ha='center', va='center',
                    fontsize=7, color='0.45')
        ax.text(x, y, tile_caption(item, k + 1), ha='center', va='top',
                fontsize=7, family='monospace', linespacing=1.1)


def contact_sheet_figure(ood_items: Sequence[Mapping],
                         id_items: Sequence[Mapping],
                         score_name: str = 'score',
                         ood_name: str = 'OoD',
                         id_name: str = 'ID',
                         count: int = CONTACT_COUNT):
    """The contact sheet of one score on one OoD set (pure: no file IO).

    Args:
        ood_items: the OoD images scored most ID-like, best first, each a
            mapping with ``score`` (float), ``thumb`` ((h, w, 3) uint8 RGB
            or None: a grey "no image" tile), and optionally ``pred_class``
            (top-1 ID class name), ``pred_cos`` (its cosine) and
            ``negative`` (the best-matching negative label).
        id_items: the ID images scored least ID-like, lowest first, same
            form.
        score_name, ood_name, id_name: names for the titles.
        count: tiles per side (``ceil(count / 4)`` rows of 4).

    Returns:
        matplotlib Figure (Agg canvas) of :func:`contact_sheet_size`;
        saved at :data:`CONTACT_DPI` it has :func:`contact_sheet_pixels`.
    """
    from .plots import _new_figure
    width, height = contact_sheet_size(count)
    fig = _new_figure((width, height))
    hw, hh = _half_pixels(count)
    half_w = hw * _ZOOM / CONTACT_DPI / width
    half_h = hh * _ZOOM / CONTACT_DPI / height
    left = 0.2 / width
    bottom = 0.1 / height
    _draw_half(fig, (left, bottom, half_w, half_h), ood_items, count,
               f'OoD set {ood_name}: the {count} scored most ID-like')
    _draw_half(fig, (1 - left - half_w, bottom, half_w, half_h), id_items,
               count, f'ID set {id_name}: the {count} scored least ID-like')
    fig.suptitle(f'{score_name}: {ood_name} vs {id_name}. Caption: rank, '
                 'score s (higher = ID), top-1 ID class (cosine), best '
                 'negative label', fontsize=10, y=1 - 0.08 / height,
                 va='top')
    return fig


def save_contact_sheet(fig, png_path: str,
                       dpi: int = CONTACT_DPI) -> str:
    """Write ``fig`` to ``png_path`` (folder created); returns the path."""
    import os
    import os.path as osp
    os.makedirs(osp.dirname(png_path) or '.', exist_ok=True)
    # light zlib compression: a third of the time of the default level
    fig.savefig(png_path, dpi=dpi, pil_kwargs=dict(compress_level=1))
    return png_path


def contact_items(records: Sequence[Mapping], positions: Sequence[int],
                  score_name: str,
                  classes: Optional[Sequence[str]] = None) -> List[dict]:
    """Tiles of :func:`contact_sheet_figure` from metric records.

    Args:
        records: :class:`~cma_ood.evaluation.OoDMetric` sample records
            (``index``, ``scores``, ``pred``, optionally ``cos``, ``neg``
            and ``thumb``).
        positions: which records, in display order.
        score_name: the score shown (its scorer's ``negatives``).
        classes: ID class names (``dataset_meta['classes']``).

    Returns:
        list of dicts with ``index``, ``score``, ``thumb``, ``pred_class``,
        ``pred_cos`` and ``negative``.
    """
    items = []
    for p in positions:
        r = records[p]
        pred = r.get('pred', -1)
        negs = (r.get('neg') or {}).get(score_name)
        items.append(dict(
            index=r['index'], score=r['scores'][score_name],
            thumb=r.get('thumb'),
            pred_class=(classes[pred] if classes is not None
                        and 0 <= pred < len(classes) else
                        (None if pred < 0 else str(pred))),
            pred_cos=r.get('cos'),
            negative=negs[0] if negs else None))
    return items
