"""The dynjax catalogue: final system Modules with the literature's parameters.

Every system's parameters are array fields (differentiable, vmappable); its
docstring gives the equations, the default parameters and where they come from.
"""

from ._chaotic_flows import Lorenz as Lorenz
