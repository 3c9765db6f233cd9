"""The single verification/identification evaluation module used by every experiment."""
from .metrics import (equal_error_rate, identification_accuracy, kfold_verification, plot_roc, roc_auc, roc_curve,
                      tar_at_far, threshold_at_far)

__all__ = ["equal_error_rate", "identification_accuracy", "kfold_verification", "plot_roc", "roc_auc", "roc_curve",
           "tar_at_far", "threshold_at_far"]
