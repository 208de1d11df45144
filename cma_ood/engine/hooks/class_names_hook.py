"""Give the model the dataset's class names, or check they agree."""
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmpretrain.registry import HOOKS


def _classes_of(dataloader):
    dataset = dataloader.dataset
    meta = getattr(dataset, 'metainfo', None) or {}
    return meta.get('classes'), type(dataset).__name__


@HOOKS.register_module()
class ClassNamesHook(Hook):
    """Before training/validation/testing, fill a model whose ``classnames``
    is ``None`` with the dataset's ``metainfo['classes']``, and check that
    explicitly configured names have as many entries as the dataset has
    classes.

    Args:
        check (bool): raise on a count mismatch. Defaults to True.
    """
    priority = 'VERY_HIGH'

    def __init__(self, check: bool = True):
        self.check = check

    def _sync(self, runner, dataloader) -> None:
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        if not hasattr(model, 'set_classnames'):
            return
        classes, dataset_name = _classes_of(dataloader)
        if model.classnames is None:
            if not classes:
                raise ValueError(
                    f'{dataset_name} has no metainfo["classes"] and the '
                    'model has no classnames: set model.classnames in the '
                    'config')
            model.set_classnames(classes)
        elif self.check and classes and len(classes) != model.num_classes:
            raise ValueError(
                f'The model has {model.num_classes} class names but '
                f'{dataset_name} has {len(classes)} classes; set '
                'model.classnames to match the dataset')

    def before_train(self, runner) -> None:
        self._sync(runner, runner.train_dataloader)

    def before_val(self, runner) -> None:
        self._sync(runner, runner.val_dataloader)

    def before_test(self, runner) -> None:
        self._sync(runner, runner.test_dataloader)
