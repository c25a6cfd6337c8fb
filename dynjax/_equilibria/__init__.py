from ._find import Equilibria as Equilibria, find_equilibria as find_equilibria
from ._linearize import (
    linear_flow as linear_flow,
    linear_modes as linear_modes,
    Linearization as Linearization,
    linearize as linearize,
    LinearModes as LinearModes,
    max_learning_rate as max_learning_rate,
    max_stable_step as max_stable_step,
    MaxStableStep as MaxStableStep,
    Stability as Stability,
)
from ._lyapunov_function import (
    check_lyapunov_function as check_lyapunov_function,
    learn_lyapunov_function as learn_lyapunov_function,
    LearnedLyapunov as LearnedLyapunov,
    LyapunovCheck as LyapunovCheck,
    LyapunovNetwork as LyapunovNetwork,
)
from ._manifolds import (
    Manifold as Manifold,
    stable_manifold as stable_manifold,
    unstable_manifold as unstable_manifold,
)
