from .cma_loss import CMALoss, cma_loss, cma_loss_terms

__all__ = ['CMALoss', 'cma_loss', 'cma_loss_terms']
