from ._cnf import CNF as CNF, fit_density as fit_density
from ._divergence import (
    divergence as divergence,
    integrate_divergence as integrate_divergence,
    sample_probes as sample_probes,
)
from ._ode import NeuralODE as NeuralODE
from ._trajectories import fit_trajectories as fit_trajectories
