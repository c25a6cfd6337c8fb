from ._poincare import (
    poincare_map as poincare_map,
    poincare_section as poincare_section,
    PoincareMap as PoincareMap,
    PoincareSection as PoincareSection,
)
from ._shooting import (
    find_periodic_orbit as find_periodic_orbit,
    PeriodicOrbit as PeriodicOrbit,
)
