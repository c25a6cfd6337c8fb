from ._clv import (
    covariant_lyapunov_vectors as covariant_lyapunov_vectors,
    CovariantLyapunovVectors as CovariantLyapunovVectors,
)
from ._dimensions import (
    kaplan_yorke_dimension as kaplan_yorke_dimension,
    ks_entropy as ks_entropy,
)
from ._ftle import (
    finite_time_lyapunov as finite_time_lyapunov,
    FiniteTimeLyapunov as FiniteTimeLyapunov,
)
from ._spectrum import (
    lyapunov_spectrum as lyapunov_spectrum,
    LyapunovInterrupted as LyapunovInterrupted,
    LyapunovResult as LyapunovResult,
    LyapunovState as LyapunovState,
    max_lyapunov as max_lyapunov,
)
