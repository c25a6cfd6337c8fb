"""The dynjax catalogue: final system Modules with the literature's parameters.

Every system's parameters are array fields (differentiable, vmappable); its
docstring gives the equations, the default parameters and where they come from.
Every system has `d` (its state dimension) and `default_x0()`; systems with
closed-form equilibria have `equilibria()` (flows) or `fixed_points()` (maps),
an `(n, d)` array.
"""

from ._chaotic_flows import (
    Chen as Chen,
    Chua as Chua,
    Lorenz as Lorenz,
    Lorenz84 as Lorenz84,
    Rossler as Rossler,
    SprottA as SprottA,
    Thomas as Thomas,
)
from ._linear import Linear as Linear, LinearMap as LinearMap
from ._maps import (
    CatMap as CatMap,
    CircleMap as CircleMap,
    Henon as Henon,
    Ikeda as Ikeda,
    Logistic as Logistic,
    StandardMap as StandardMap,
    Tent as Tent,
)
from ._mechanics import DoublePendulum as DoublePendulum, HenonHeiles as HenonHeiles
from ._networks import (
    Kuramoto as Kuramoto,
    Lorenz96 as Lorenz96,
    RandomRateNetwork as RandomRateNetwork,
)
from ._normal_forms import (
    HopfNormalForm as HopfNormalForm,
    PitchforkNormalForm as PitchforkNormalForm,
    SaddleNodeNormalForm as SaddleNodeNormalForm,
    TranscriticalNormalForm as TranscriticalNormalForm,
)
from ._oscillators import (
    Brusselator as Brusselator,
    Duffing as Duffing,
    FitzHughNagumo as FitzHughNagumo,
    LotkaVolterra as LotkaVolterra,
    VanDerPol as VanDerPol,
)
