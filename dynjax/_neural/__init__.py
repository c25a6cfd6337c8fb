from ._divergence import (
    divergence as divergence,
    integrate_divergence as integrate_divergence,
    sample_probes as sample_probes,
)
