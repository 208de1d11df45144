"""The per-image table of an OoD evaluation (``ood_per_image.csv``).

One row per scored image, in dataset order (the order of the test set's
concatenation index), built from :class:`~cma_ood.evaluation.OoDMetric`'s
sample records by :func:`per_image_table` and written with the csv module
by :func:`per_image_csv_text`. Columns (:func:`per_image_header`):

- ``index``: the image's index in the test set (``ood_index`` of
  ``OoDConcatDataset``: ID set first, then each OoD set);
- ``set``, ``is_id`` (1 for the ID set, else 0) and ``set_index`` (the
  image's position within its set, broken images skipped);
- ``img_path``: the file (empty for generated images);
- ``gt_label``, ``gt_class``: the ID label (empty for OoD images);
- ``pred_label``, ``pred_class``, ``pred_cos``: the top-1 ID class and
  the cosine of the image to its prompt;
- one column per score (higher = ID), seed variants (``name@seed=s``)
  included, at full float precision;
- ``{score}_top_negatives``: for scorers that report them, the negative
  labels the image matched best, most similar first, ``|``-joined.
"""
import csv
from io import StringIO
from typing import List, Mapping, Optional, Sequence, Tuple

#: File name of the table, next to ``ood_results.json``.
PER_IMAGE_FILE = 'ood_per_image.csv'

_FIXED = ('index', 'set', 'is_id', 'set_index', 'img_path', 'gt_label',
          'gt_class', 'pred_label', 'pred_class', 'pred_cos')


def negatives_column(score: str) -> str:
    """Column holding ``score``'s best-matching negative labels."""
    return f'{score}_top_negatives'


def per_image_header(score_names: Sequence[str],
                     negative_names: Sequence[str] = ()) -> List[str]:
    """The CSV header: the fixed columns, one per score, then one
    :func:`negatives_column` per scorer in ``negative_names``."""
    return list(_FIXED) + list(score_names) + [
        negatives_column(n) for n in negative_names]


def _class(classes: Optional[Sequence[str]], label: int) -> str:
    if label < 0:
        return ''
    if classes is not None and label < len(classes):
        return str(classes[label])
    return ''


def per_image_table(records: Sequence[Mapping], id_source: str,
                    score_names: Sequence[str],
                    classes: Optional[Sequence[str]] = None
                    ) -> Tuple[List[str], List[list]]:
    """Header and rows of the per-image table (pure).

    Args:
        records: one record per image, sorted by ``index``, as
            ``OoDMetric`` keeps them: ``index``, ``source``, ``scores``
            (``{name: float}``), ``gt`` and ``pred`` (class indices, -1 if
            none), and optionally ``path``, ``cos`` and ``neg``
            (``{score: [labels]}``).
        id_source: the ID set's name.
        score_names: the score columns, in order (a record without one of
            them leaves its cell empty).
        classes: ID class names for ``gt_class`` / ``pred_class``.

    Returns:
        ``(header, rows)``: rows are lists of str / int / float cells.
    """
    negative_names = []
    for r in records:
        for name in (r.get('neg') or {}):
            if name not in negative_names:
                negative_names.append(name)
    header = per_image_header(score_names, negative_names)
    rows, seen_in_set = [], {}
    for r in records:
        source = r['source']
        set_index = seen_in_set.get(source, 0)
        seen_in_set[source] = set_index + 1
        gt, pred = int(r.get('gt', -1)), int(r.get('pred', -1))
        cos = r.get('cos')
        scores = r['scores']
        negs = r.get('neg') or {}
        rows.append(
            [r['index'], source, int(source == id_source), set_index,
             r.get('path') or '', gt if gt >= 0 else '', _class(classes, gt),
             pred if pred >= 0 else '', _class(classes, pred),
             '' if cos is None else float(cos)] +
            [scores[n] if n in scores else '' for n in score_names] +
            ['|'.join(str(x) for x in negs[n]) if n in negs else ''
             for n in negative_names])
    return header, rows


def per_image_csv_text(header: Sequence[str], rows: Sequence[list]) -> str:
    """The table as CSV text (csv module, ``\\n`` line ends; floats at
    full precision)."""
    buf = StringIO()
    writer = csv.writer(buf, lineterminator='\n')
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()
