from .class_names_hook import ClassNamesHook
from .ood_output_hook import OoDOutputHook

__all__ = ['ClassNamesHook', 'OoDOutputHook']
