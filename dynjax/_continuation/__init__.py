from ._branch import (
    BifurcationKind as BifurcationKind,
    Bifurcations as Bifurcations,
    Branch as Branch,
    continuation as continuation,
    first_lyapunov_coefficient as first_lyapunov_coefficient,
)
