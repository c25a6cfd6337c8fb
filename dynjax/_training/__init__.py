from ._fit import (
    fit as fit,
    FitInterrupted as FitInterrupted,
    FitResult as FitResult,
    load_model as load_model,
    save_model as save_model,
)
