from ._branch import (
    Bifurcations as Bifurcations,
    Branch as Branch,
    continuation as continuation,
    first_lyapunov_coefficient as first_lyapunov_coefficient,
    switch_branch as switch_branch,
)
from ._chart import (
    stability_chart as stability_chart,
    StabilityChart as StabilityChart,
)
from ._codim2 import (
    BifurcationCurve as BifurcationCurve,
    fold_curve as fold_curve,
    hopf_curve as hopf_curve,
)
from ._cycles import (
    cycle_continuation as cycle_continuation,
    CycleBranch as CycleBranch,
)
from ._orbit_diagram import (
    feigenbaum_ratios as feigenbaum_ratios,
    orbit_diagram as orbit_diagram,
    OrbitDiagram as OrbitDiagram,
    period_doublings as period_doublings,
    PeriodDoublings as PeriodDoublings,
)
