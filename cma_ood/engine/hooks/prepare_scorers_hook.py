"""Prepare the OoD scorers before the validation and test loops."""
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmpretrain.registry import HOOKS

from ...evaluation.streams import hand_over_stream_scorers


@HOOKS.register_module()
class PrepareScorersHook(Hook):
    """Before the val/test loop, let the model prepare its OoD scorers for
    its current weights (``MultiModalClassifier.prepare_scorers``: NegLabel
    mines or loads its negatives, feature scorers read their files), as
    mmpretrain's ``PrepareProtoBeforeValLoopHook`` does for retrievers. The
    work (disk I/O, rank-0 mining and its collectives) then happens before
    the first batch instead of inside the first ``test_step``; models
    without scorers are left alone, and ``predict`` still prepares lazily
    when this hook is absent.

    Validation prepares only the scorers with ``at_validation`` (the cheap
    ones by default). The model's stream scorers (AdaNeg) are then handed
    to the evaluator's ``OoDMetric``, which runs their streams
    (:func:`~cma_ood.evaluation.streams.hand_over_stream_scorers`).
    """
    priority = 'NORMAL'

    @staticmethod
    def _prepare(runner, validating: bool) -> None:
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        prepare = getattr(model, 'prepare_scorers', None)
        if prepare is None:
            return
        model.eval()  # the loop does this next; scorers see eval weights
        prepare(validating=validating)
        # stream scorers (AdaNeg) to the metrics that run their streams
        hand_over_stream_scorers(
            model, getattr(runner, 'val_evaluator' if validating else
                           'test_evaluator', None), validating=validating)

    def before_val(self, runner) -> None:
        self._prepare(runner, validating=True)

    def before_test(self, runner) -> None:
        self._prepare(runner, validating=False)
