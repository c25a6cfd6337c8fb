from ._analysis import (
    baseline_features as baseline_features,
    BASELINES as BASELINES,
    ClassifierComparison as ClassifierComparison,
    compare_classifiers as compare_classifiers,
    interpolate_spectra as interpolate_spectra,
    logistic_regression as logistic_regression,
    LogisticRegression as LogisticRegression,
    roc_auc as roc_auc,
    roc_curve as roc_curve,
    split_networks as split_networks,
)
from ._model import AeLLE as AeLLE, aelle_loss as aelle_loss, fit_aelle as fit_aelle
from ._population import (
    Population as Population,
    population_adam as population_adam,
    population_spectra as population_spectra,
    Stack as Stack,
    stack_networks as stack_networks,
    stack_spectra as stack_spectra,
    train_population as train_population,
    train_stack as train_stack,
)
from ._tasks import (
    AbstractTask as AbstractTask,
    DelayedRecallTask as DelayedRecallTask,
    SequenceClassification as SequenceClassification,
    SequentialDigits as SequentialDigits,
)
