"""Point OoD metrics without an ``out_dir`` at the run's log directory."""
from mmengine.hooks import Hook
from mmpretrain.registry import HOOKS


@HOOKS.register_module()
class OoDOutputHook(Hook):
    """Set ``out_dir`` of every evaluator metric that has an unset
    ``out_dir`` attribute (e.g. ``OoDMetric``) to ``runner.log_dir``, so the
    JSON results and plots land next to the log of the run."""

    @staticmethod
    def _point(runner, evaluator) -> None:
        for metric in getattr(evaluator, 'metrics', []):
            if hasattr(metric, 'out_dir') and metric.out_dir is None:
                metric.out_dir = runner.log_dir

    def before_val(self, runner) -> None:
        self._point(runner, runner.val_evaluator)

    def before_test(self, runner) -> None:
        self._point(runner, runner.test_evaluator)
