from ._continuous import (
    gd_flow_distance as gd_flow_distance,
    gradient_flow_trajectory as gradient_flow_trajectory,
    GradientFlowTrajectory as GradientFlowTrajectory,
    sgd_sde as sgd_sde,
    SGDSDEPath as SGDSDEPath,
)
from ._curvature import (
    max_stable_learning_rate as max_stable_learning_rate,
    Sharpness as Sharpness,
    sharpness as sharpness,
)
from ._fit import (
    fit as fit,
    FitInterrupted as FitInterrupted,
    FitResult as FitResult,
    load_model as load_model,
    save_model as save_model,
)
from ._maps import (
    GradientFlow as GradientFlow,
    minibatch_indices as minibatch_indices,
    OptimizerMap as OptimizerMap,
    StochasticOptimizerMap as StochasticOptimizerMap,
)
from ._train import (
    LyapunovProbe as LyapunovProbe,
    SharpnessProbe as SharpnessProbe,
    train as train,
    TrainingInterrupted as TrainingInterrupted,
    TrainingTrajectory as TrainingTrajectory,
)
