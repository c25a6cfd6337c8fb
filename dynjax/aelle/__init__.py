"""AeLLE: predicting recurrent-network performance from Lyapunov spectra.

The method of Vogt, Zheng & Shlizerman ("Lyapunov-guided representation of
recurrent neural network performance", arXiv 2204.04876, 2022) as a set of verbs:

- **Tasks** (`AbstractTask`): `SequentialDigits` (scikit-learn's 8x8 digits fed
  row by row or pixel by pixel; `pip install 'dynjax[tasks]'`),
  `DelayedRecallTask` (generated), `SequenceClassification` (any labelled
  sequences).
- **Populations**: `train_population` trains networks of several cell types and
  hidden sizes, each `Stack` (one type and size) vmapped in one compiled program
  (`train_stack`, `population_adam`); `population_spectra` gives every network's
  spectrum on held-out task inputs (`stack_spectra`, `interpolate_spectra` to a
  common length); `stack_networks` stacks networks trained elsewhere.
- **The autoencoder**: `AeLLE`, `aelle_loss`, `fit_aelle`.
- **Analysis**: `split_networks` (train/validation/test over networks),
  `compare_classifiers` (the latent-space classifier of good vs bad networks
  against the baselines of `baseline_features`), `roc_auc`, `roc_curve`,
  `logistic_regression`. Plots: `dynjax.plot.spectra_by_performance`,
  `dynjax.plot.latent_space`, `dynjax.plot.roc_curves`.
"""

from .._aelle import (
    AbstractTask as AbstractTask,
    AeLLE as AeLLE,
    aelle_loss as aelle_loss,
    baseline_features as baseline_features,
    BASELINES as BASELINES,
    ClassifierComparison as ClassifierComparison,
    compare_classifiers as compare_classifiers,
    DelayedRecallTask as DelayedRecallTask,
    fit_aelle as fit_aelle,
    interpolate_spectra as interpolate_spectra,
    logistic_regression as logistic_regression,
    LogisticRegression as LogisticRegression,
    Population as Population,
    population_adam as population_adam,
    population_spectra as population_spectra,
    roc_auc as roc_auc,
    roc_curve as roc_curve,
    SequenceClassification as SequenceClassification,
    SequentialDigits as SequentialDigits,
    split_networks as split_networks,
    Stack as Stack,
    stack_networks as stack_networks,
    stack_spectra as stack_spectra,
    train_population as train_population,
    train_stack as train_stack,
)
