from .functional import ood_metrics
from .ood_metric import OoDMetric, format_ood_table

__all__ = ['ood_metrics', 'OoDMetric', 'format_ood_table']
