"""dynjax: differentiable dynamical systems in JAX."""

import importlib.metadata

from . import aelle as aelle, plot as plot, rnn as rnn, systems as systems
from ._continuation import (
    BifurcationCurve as BifurcationCurve,
    Bifurcations as Bifurcations,
    Branch as Branch,
    continuation as continuation,
    cycle_continuation as cycle_continuation,
    CycleBranch as CycleBranch,
    feigenbaum_ratios as feigenbaum_ratios,
    first_lyapunov_coefficient as first_lyapunov_coefficient,
    fold_curve as fold_curve,
    hopf_curve as hopf_curve,
    orbit_diagram as orbit_diagram,
    OrbitDiagram as OrbitDiagram,
    period_doublings as period_doublings,
    PeriodDoublings as PeriodDoublings,
    stability_chart as stability_chart,
    StabilityChart as StabilityChart,
    switch_branch as switch_branch,
)
from ._diffusion import (
    AbstractSDE as AbstractSDE,
    DiffusionLikelihood as DiffusionLikelihood,
    DiffusionSamples as DiffusionSamples,
    probability_flow_log_likelihood as probability_flow_log_likelihood,
    probability_flow_sample as probability_flow_sample,
    ProbabilityFlow as ProbabilityFlow,
    reverse_sde_sample as reverse_sde_sample,
    score_matching_loss as score_matching_loss,
    SubVPSDE as SubVPSDE,
    VESDE as VESDE,
    VPSDE as VPSDE,
)
from ._equilibria import (
    check_lyapunov_function as check_lyapunov_function,
    Equilibria as Equilibria,
    find_equilibria as find_equilibria,
    learn_lyapunov_function as learn_lyapunov_function,
    LearnedLyapunov as LearnedLyapunov,
    linear_flow as linear_flow,
    linear_modes as linear_modes,
    Linearization as Linearization,
    linearize as linearize,
    LinearModes as LinearModes,
    LyapunovCheck as LyapunovCheck,
    LyapunovNetwork as LyapunovNetwork,
    Manifold as Manifold,
    max_learning_rate as max_learning_rate,
    max_stable_step as max_stable_step,
    MaxStableStep as MaxStableStep,
    Stability as Stability,
    stable_manifold as stable_manifold,
    unstable_manifold as unstable_manifold,
)
from ._evolve import Trajectory as Trajectory, trajectory as trajectory
from ._lyapunov import (
    covariant_lyapunov_vectors as covariant_lyapunov_vectors,
    CovariantLyapunovVectors as CovariantLyapunovVectors,
    finite_time_lyapunov as finite_time_lyapunov,
    FiniteTimeLyapunov as FiniteTimeLyapunov,
    kaplan_yorke_dimension as kaplan_yorke_dimension,
    ks_entropy as ks_entropy,
    lyapunov_spectrum as lyapunov_spectrum,
    LyapunovInterrupted as LyapunovInterrupted,
    LyapunovResult as LyapunovResult,
    LyapunovState as LyapunovState,
    max_lyapunov as max_lyapunov,
)
from ._neural import (
    CNF as CNF,
    fit_density as fit_density,
    fit_trajectories as fit_trajectories,
    NeuralODE as NeuralODE,
)
from ._periodic import (
    find_periodic_orbit as find_periodic_orbit,
    PeriodicOrbit as PeriodicOrbit,
    poincare_map as poincare_map,
    poincare_section as poincare_section,
    PoincareMap as PoincareMap,
    PoincareSection as PoincareSection,
)
from ._results import RESULTS as RESULTS
from ._rnn import (
    depth_lyapunov as depth_lyapunov,
    DepthLyapunov as DepthLyapunov,
    find_slow_points as find_slow_points,
    flossing_loss as flossing_loss,
    gradient_propagation as gradient_propagation,
    GradientPropagation as GradientPropagation,
    rnn_spectrum as rnn_spectrum,
    RNNSpectrum as RNNSpectrum,
    sample_guesses as sample_guesses,
    signal_propagation as signal_propagation,
    SignalPropagation as SignalPropagation,
    SlowPoints as SlowPoints,
)
from ._system import (
    AbstractDrivenMap as AbstractDrivenMap,
    AbstractFlow as AbstractFlow,
    AbstractMap as AbstractMap,
    AbstractSystem as AbstractSystem,
    autonomize as autonomize,
    Autonomized as Autonomized,
    DrivenMap as DrivenMap,
    euler_map as euler_map,
    EulerMap as EulerMap,
    first_order as first_order,
    FirstOrder as FirstOrder,
    Flow as Flow,
    jacobian as jacobian,
    Map as Map,
    state_difference as state_difference,
)
from ._training import (
    fit as fit,
    FitInterrupted as FitInterrupted,
    FitResult as FitResult,
    gd_flow_distance as gd_flow_distance,
    gradient_flow_trajectory as gradient_flow_trajectory,
    GradientFlow as GradientFlow,
    GradientFlowTrajectory as GradientFlowTrajectory,
    load_model as load_model,
    LyapunovProbe as LyapunovProbe,
    max_stable_learning_rate as max_stable_learning_rate,
    minibatch_indices as minibatch_indices,
    OptimizerMap as OptimizerMap,
    save_model as save_model,
    sgd_sde as sgd_sde,
    SGDSDEPath as SGDSDEPath,
    Sharpness as Sharpness,
    sharpness as sharpness,
    SharpnessProbe as SharpnessProbe,
    StochasticOptimizerMap as StochasticOptimizerMap,
    train as train,
    TrainingInterrupted as TrainingInterrupted,
    TrainingTrajectory as TrainingTrajectory,
)


try:
    __version__ = importlib.metadata.version("dynjax")
except importlib.metadata.PackageNotFoundError:  # a source checkout on sys.path
    __version__ = "0+unknown"
