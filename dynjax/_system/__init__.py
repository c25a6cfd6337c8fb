from ._base import (
    AbstractDrivenMap as AbstractDrivenMap,
    AbstractFlow as AbstractFlow,
    AbstractMap as AbstractMap,
    AbstractSystem as AbstractSystem,
)
from ._coordinates import state_difference as state_difference
from ._jacobian import jacobian as jacobian
from ._transforms import (
    autonomize as autonomize,
    Autonomized as Autonomized,
    euler_map as euler_map,
    EulerMap as EulerMap,
    first_order as first_order,
    FirstOrder as FirstOrder,
)
from ._wrappers import DrivenMap as DrivenMap, Flow as Flow, Map as Map
