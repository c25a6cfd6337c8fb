"""dynjax: differentiable dynamical systems in JAX."""

import importlib.metadata

from . import plot as plot, systems as systems
from ._evolve import Trajectory as Trajectory, trajectory as trajectory
from ._results import RESULTS as RESULTS
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
)

# --- Lyapunov engine (issue 4) ---

# --- Local analysis (issue 5) ---


__version__ = importlib.metadata.version("dynjax")
