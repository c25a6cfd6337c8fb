import equinox as eqx
import jax.numpy as jnp
import jax.scipy.linalg as jsl
from jaxtyping import Array, Float

from .._custom_types import Args, IntScalarLike, RealScalarLike, State
from .._misc import as_param
from .._system import AbstractFlow, AbstractMap
from ._common import as_inexact, check_square


class Linear(AbstractFlow):
    r"""The linear flow `x' = A x`.

    Its solution is `x(t) = expm(t A) x0` (`exact`), and its Lyapunov exponents
    are the real parts of the eigenvalues of `A`: the reference every tangent
    and exponent computation in dynjax is checked against.

    **Arguments:**

    - `A`: a square matrix of shape `(d, d)`; fixes `d`.

    **Example:**

    ```python
    saddle = dynjax.systems.Linear(jnp.array([[1.0, 0.0], [0.0, -2.0]]))
    ```

    **Reference:** M. W. Hirsch, S. Smale and R. L. Devaney, *Differential
    Equations, Dynamical Systems, and an Introduction to Chaos* (2004), ch. 6.
    """

    A: Float[Array, "d d"] = eqx.field(converter=as_param)
    d: int = eqx.field(static=True)

    def __init__(self, A):
        check_square(A, "Linear")
        self.A = as_inexact(A)
        self.d = jnp.shape(A)[0]

    def vector_field(self, t: RealScalarLike, x: State, args: Args = None) -> State:
        del t, args
        return self.A @ x

    def exact(self, t: RealScalarLike, x0: State) -> State:
        """The exact solution `expm(t A) @ x0`."""
        return jsl.expm(t * self.A) @ x0

    def equilibria(self) -> Float[Array, "1 d"]:
        """The origin (the only equilibrium when `A` is invertible; otherwise
        every vector of the null space of `A` is one too)."""
        return jnp.zeros((1, self.d), dtype=self.A.dtype)

    def default_x0(self) -> State:
        """The all-ones vector."""
        return jnp.ones(self.d, dtype=jnp.result_type(self.A.dtype, float))


class LinearMap(AbstractMap):
    r"""The linear map `x_{n+1} = A x_n`.

    `x_n = A^n x_0`; its Lyapunov exponents are the logarithms of the moduli of
    the eigenvalues of `A`.

    **Arguments:**

    - `A`: a square matrix of shape `(d, d)`; fixes `d`.

    **Reference:** M. W. Hirsch, S. Smale and R. L. Devaney, *Differential
    Equations, Dynamical Systems, and an Introduction to Chaos* (2004), ch. 15.
    """

    A: Float[Array, "d d"] = eqx.field(converter=as_param)
    d: int = eqx.field(static=True)

    def __init__(self, A):
        check_square(A, "LinearMap")
        self.A = as_inexact(A)
        self.d = jnp.shape(A)[0]

    def step(self, n: IntScalarLike, x: State, args: Args = None) -> State:
        del n, args
        return self.A @ x

    def exact(self, n: IntScalarLike, x0: State) -> State:
        """`A^n @ x0` for an integer `n >= 0`."""
        return jnp.linalg.matrix_power(self.A, n) @ x0

    def fixed_points(self) -> Float[Array, "1 d"]:
        """The origin (the only fixed point unless 1 is an eigenvalue of `A`)."""
        return jnp.zeros((1, self.d), dtype=self.A.dtype)

    def default_x0(self) -> State:
        """The all-ones vector."""
        return jnp.ones(self.d, dtype=jnp.result_type(self.A.dtype, float))
