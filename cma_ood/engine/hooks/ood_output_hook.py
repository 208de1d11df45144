"""Write the OoD report files of a run, with its provenance, to its log dir."""
import os
import os.path as osp
from typing import Dict, Optional, Tuple

from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmpretrain.registry import HOOKS

from ...evaluation.outputs import write_ood_outputs
from ...evaluation.provenance import run_provenance, sha256_file


@HOOKS.register_module()
class OoDOutputHook(Hook):
    """Write ``ood_results.json`` and the OoD plots of a val/test run.

    Before the loop, every evaluator metric that keeps its results for a
    writer (an ``OoDMetric``: attributes ``defer_outputs``, ``last_report``,
    ``last_scores``) is told to leave the files to this hook, and every
    metric with an unset ``out_dir`` attribute gets ``runner.log_dir``.
    After the epoch, on the main process, the hook writes each such
    metric's last results (with its per-image table and contact sheets,
    ``last_per_image`` / ``last_contact``, where it keeps them) into its
    ``out_dir`` with
    :func:`cma_ood.evaluation.outputs.write_ood_outputs`, adding to the JSON
    a ``provenance`` record (:func:`cma_ood.evaluation.provenance.
    run_provenance`): config path and sha256, checkpoint (``load_from``)
    path and sha256 (``None`` for zero-shot), model type, arch and
    ``pretrained``, every scorer's type, name and configured arguments,
    package versions and the UTC date. The metric numbers are untouched.

    A file is hashed once per hook (per path, size and mtime), so a
    validation every epoch does not re-read the checkpoint.
    """

    def __init__(self) -> None:
        self._hashes: Dict[Tuple[str, int, int], str] = {}

    # ---------------------------------------------------------------- setup
    @staticmethod
    def _metrics(evaluator):
        return list(getattr(evaluator, 'metrics', None) or [])

    def _point(self, runner, evaluator) -> None:
        for metric in self._metrics(evaluator):
            if hasattr(metric, 'out_dir') and metric.out_dir is None:
                metric.out_dir = runner.log_dir
            if hasattr(metric, 'defer_outputs'):
                metric.defer_outputs = True

    def before_val(self, runner) -> None:
        self._point(runner, runner.val_evaluator)

    def before_test(self, runner) -> None:
        self._point(runner, runner.test_evaluator)

    # ---------------------------------------------------------------- write
    def _hash(self, path: str) -> str:
        st = os.stat(path)
        key = (osp.abspath(path), st.st_size, st.st_mtime_ns)
        if key not in self._hashes:
            self._hashes[key] = sha256_file(path)
        return self._hashes[key]

    def provenance(self, runner) -> dict:
        """The provenance record of ``runner``'s current run."""
        model = runner.model
        if is_model_wrapper(model):
            model = model.module
        cfg = runner.cfg
        model_cfg = cfg.get('model') or {}
        return run_provenance(
            config_path=cfg.filename,
            checkpoint=cfg.get('load_from'),
            model=model,
            scorer_cfgs=model_cfg.get('ood_scorers'),
            pretrained=model_cfg.get('pretrained'),
            hash_file=self._hash)

    def _write(self, runner, evaluator) -> None:
        if not is_main_process():
            return
        provenance: Optional[dict] = None
        for metric in self._metrics(evaluator):
            if not getattr(metric, 'defer_outputs', False):
                continue
            report = getattr(metric, 'last_report', None)
            if report is None or metric.out_dir is None:
                continue
            if provenance is None:
                provenance = self.provenance(runner)
            write_ood_outputs(
                dict(report, provenance=provenance), metric.last_scores,
                metric.out_dir, save_plots=getattr(metric, 'save_plots',
                                                   True),
                per_image=getattr(metric, 'last_per_image', None),
                contact=getattr(metric, 'last_contact', None))

    def after_val_epoch(self, runner, metrics=None) -> None:
        self._write(runner, runner.val_evaluator)

    def after_test_epoch(self, runner, metrics=None) -> None:
        self._write(runner, runner.test_evaluator)
