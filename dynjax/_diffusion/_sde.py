"""Forward SDEs of score-based diffusion (Song et al. 2021, Appendix B).

Every SDE here has a drift linear in the state and a state-independent scalar
diffusion,

    dx = f(t) x dt + g(t) dW,

so its transition kernel is Gaussian, `x_t | x_0 ~ N(alpha_t x_0, sigma_t^2 I)`,
with `alpha_t = exp(int_0^t f)` and `sigma_t^2 = alpha_t^2 int_0^t g^2 / alpha^2`.
"""

import abc
import math

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from .._custom_types import RealScalarLike
from .._misc import as_param


Scalar = Float[Array, ""]


def _check_params(name: str, conditions) -> None:
    """Raise `ValueError` for concrete parameters that break a condition.

    `conditions` is a sequence of `(ok, message)`; traced values (inside `vmap`,
    `grad`) are not checked.
    """
    for ok, message in conditions:
        if isinstance(ok, jax.core.Tracer):
            continue
        if not bool(np.all(np.asarray(ok))):
            raise ValueError(f"{name}: {message}")


class AbstractSDE(eqx.Module):
    r"""A forward (noising) SDE of score-based diffusion, `dx = f(t, x) dt + g(t) dW`.

    The state is a 1-D array of shape `(d,)`; `W` is a `d`-dimensional Brownian
    motion and `g(t)` a scalar. The SDE runs on `[0, T]` and carries the data
    distribution `p_0` to (approximately) the prior `p_T`.

    Subclasses implement:

    - `drift(t, x)`: `f(t, x)`, shape `(d,)`;
    - `diffusion(t)`: `g(t)`, a scalar;
    - `marginal(t)`: `(alpha_t, sigma_t)` in closed form, such that
        `x_t | x_0 ~ N(alpha_t x_0, sigma_t^2 I)`;
    - `prior_sample(key, d)` and `prior_log_prob(x)`: the prior `p_T` that
        samplers start from and likelihoods end at.

    Parameters are array fields, so `jax.grad` and `eqx.filter_vmap` act on them.

    **Reference:** Y. Song, J. Sohl-Dickstein, D. P. Kingma, A. Kumar, S. Ermon
    and B. Poole, "Score-based generative modeling through stochastic
    differential equations", ICLR (2021), Section 3.4 and Appendix B.
    """

    T: eqx.AbstractVar[Scalar]

    @abc.abstractmethod
    def drift(self, t: RealScalarLike, x: Float[Array, " d"]) -> Float[Array, " d"]:
        """The drift `f(t, x)` of the forward SDE.

        **Arguments:**

        - `t`: the time, a scalar in `[0, T]`.
        - `x`: the state, shape `(d,)`.

        **Returns:**

        `f(t, x)`, shape `(d,)`, in `x`'s dtype.
        """

    @abc.abstractmethod
    def diffusion(self, t: RealScalarLike) -> Scalar:
        """The diffusion coefficient `g(t)` (the same for every coordinate).

        **Arguments:**

        - `t`: the time, a scalar in `[0, T]`.

        **Returns:**

        `g(t)`, a scalar.
        """

    @abc.abstractmethod
    def marginal(self, t: RealScalarLike) -> tuple[Scalar, Scalar]:
        """The transition kernel from time 0 in closed form.

        **Arguments:**

        - `t`: the time, a scalar in `[0, T]`.

        **Returns:**

        `(alpha_t, sigma_t)`, two scalars, such that
        `x_t | x_0 ~ N(alpha_t x_0, sigma_t^2 I)`.
        """

    @abc.abstractmethod
    def prior_std(self) -> Scalar:
        """The standard deviation `s` of the prior `p_T = N(0, s^2 I)`, a scalar."""

    def prior_sample(self, key: PRNGKeyArray, d: int, dtype=None) -> Float[Array, " d"]:
        """One draw from the prior `N(0, s^2 I)`, shape `(d,)`.

        `dtype` defaults to the dtype of the SDE's parameters.
        """
        dtype = jnp.result_type(self.T) if dtype is None else dtype
        return self.prior_std().astype(dtype) * jax.random.normal(key, (d,), dtype)

    def prior_log_prob(self, x: Float[Array, " d"]) -> Scalar:
        """The log-density of the prior `N(0, s^2 I)` at `x` (shape `(d,)`), in
        nats."""
        s = self.prior_std().astype(x.dtype)
        d = x.shape[-1]
        log_norm = d * (0.5 * math.log(2 * math.pi) + jnp.log(s))
        return -0.5 * jnp.sum((x / s) ** 2) - log_norm

    def terms(self, brownian: dfx.AbstractBrownianPath) -> dfx.MultiTerm:
        """The SDE as diffrax terms, for `diffrax.diffeqsolve`.

        **Arguments:**

        - `brownian`: a diffrax Brownian path of shape `(d,)`, e.g.
            `diffrax.VirtualBrownianTree(0.0, sde.T, tol, (d,), key)`.

        **Returns:**

        `diffrax.MultiTerm(ODETerm(f), ControlTerm(g, brownian))`; the diffusion
        is a `lineax.DiagonalLinearOperator` (diagonal noise).
        """
        drift = dfx.ODETerm(lambda t, x, args: self.drift(t, x))
        return dfx.MultiTerm(drift, noise_term(self, brownian))


def noise_term(sde: AbstractSDE, brownian, time=None) -> dfx.ControlTerm:
    """`g(t) dW` as a diffrax term with diagonal noise (a lineax operator); the
    solver's time `s` is mapped to the SDE's by `t = time(s)` if given."""
    time = (lambda s: s) if time is None else time
    return dfx.ControlTerm(
        lambda s, x, args: lx.DiagonalLinearOperator(
            jnp.broadcast_to(sde.diffusion(time(s)).astype(x.dtype), x.shape)
        ),
        brownian,
    )


def _check_vp_params(name: str, sde) -> None:
    """The parameter checks shared by `VPSDE` and `SubVPSDE`."""
    _check_params(
        name,
        [
            (sde.beta_min >= 0, "`beta_min` must be >= 0."),
            (sde.beta_max > 0, "`beta_max` must be > 0."),
            (sde.beta_max >= sde.beta_min, "`beta_max` must be >= `beta_min`."),
            (sde.T > 0, "`T` must be > 0."),
        ],
    )


def _vp_beta(sde, t):
    """The linear schedule `beta(t)` shared by `VPSDE` and `SubVPSDE`."""
    return sde.beta_min + (sde.beta_max - sde.beta_min) * t / sde.T


def _vp_integral(beta_min, beta_max, T, t):
    """`B(t) = int_0^t beta`, `beta(s) = beta_min + (beta_max - beta_min) s / T`."""
    return beta_min * t + 0.5 * (beta_max - beta_min) * t**2 / T


class VPSDE(AbstractSDE):
    r"""The variance-preserving SDE (the continuous limit of DDPM).

    $$dx = -\tfrac12 \beta(t)\, x\, dt + \sqrt{\beta(t)}\, dW,\qquad
    \beta(t) = \beta_\min + (\beta_\max - \beta_\min)\, t / T.$$

    With `B(t) = int_0^t beta = beta_min t + (beta_max - beta_min) t^2 / (2T)`,
    the marginal is `alpha_t = exp(-B(t)/2)`, `sigma_t^2 = 1 - exp(-B(t))`
    (Song et al. 2021, eq. 29). The prior is `N(0, I)`.

    **Arguments:**

    - `beta_min`, `beta_max`: the noise rate at `t = 0` and `t = T`
        (`0 <= beta_min <= beta_max`, `beta_max > 0`); defaults 0.1 and 20.
    - `T`: the final time (> 0), default 1.

    **Reference:** Song et al., ICLR (2021), Appendix B; J. Ho, A. Jain and
    P. Abbeel, "Denoising diffusion probabilistic models", NeurIPS (2020).
    """

    beta_min: Scalar = eqx.field(converter=as_param)
    beta_max: Scalar = eqx.field(converter=as_param)
    T: Scalar = eqx.field(converter=as_param)

    def __init__(self, beta_min=0.1, beta_max=20.0, T=1.0):
        self.beta_min = beta_min
        self.beta_max = beta_max
        self.T = T

    def __check_init__(self):
        _check_vp_params("VPSDE", self)

    def beta(self, t: RealScalarLike) -> Scalar:
        """The noise rate `beta(t)` for a scalar `t`; a scalar."""
        return _vp_beta(self, t)

    def drift(self, t, x):
        """`f(t, x) = -beta(t) x / 2` for a scalar `t` and `x` of shape `(d,)`;
        shape `(d,)`."""
        return -0.5 * self.beta(t).astype(x.dtype) * x

    def diffusion(self, t):
        """`g(t) = sqrt(beta(t))` for a scalar `t`; a scalar."""
        return jnp.sqrt(self.beta(t))

    def marginal(self, t):
        """`(alpha_t, sigma_t)` for a scalar `t`: `alpha_t = exp(-B(t) / 2)` with
        `B(t) = int_0^t beta`, and `sigma_t^2 = 1 - alpha_t^2`; two scalars."""
        B = _vp_integral(self.beta_min, self.beta_max, self.T, t)
        return jnp.exp(-0.5 * B), jnp.sqrt(-jnp.expm1(-B))

    def prior_std(self):
        """`1`: the prior is `N(0, I)`; a scalar."""
        return jnp.ones_like(self.T)


class SubVPSDE(AbstractSDE):
    r"""The sub-variance-preserving SDE.

    $$dx = -\tfrac12 \beta(t)\, x\, dt
    + \sqrt{\beta(t)\,(1 - e^{-2 B(t)})}\, dW,$$

    with `beta` and `B` as in `dynjax.VPSDE`. Its marginal is
    `alpha_t = exp(-B(t)/2)`, `sigma_t = 1 - exp(-B(t))` (Song et al. 2021,
    eq. 30): the variance is below the VP SDE's at every `t`. The prior is
    `N(0, I)`.

    **Arguments:**

    - `beta_min`, `beta_max`: as in `dynjax.VPSDE`; defaults 0.1 and 20.
    - `T`: the final time (> 0), default 1.

    **Reference:** Song et al., ICLR (2021), Section 3.4 and Appendix B.
    """

    beta_min: Scalar = eqx.field(converter=as_param)
    beta_max: Scalar = eqx.field(converter=as_param)
    T: Scalar = eqx.field(converter=as_param)

    def __init__(self, beta_min=0.1, beta_max=20.0, T=1.0):
        self.beta_min = beta_min
        self.beta_max = beta_max
        self.T = T

    def __check_init__(self):
        _check_vp_params("SubVPSDE", self)

    def beta(self, t: RealScalarLike) -> Scalar:
        """The noise rate `beta(t)` for a scalar `t`; a scalar."""
        return _vp_beta(self, t)

    def drift(self, t, x):
        """`f(t, x) = -beta(t) x / 2` for a scalar `t` and `x` of shape `(d,)`;
        shape `(d,)`."""
        return -0.5 * self.beta(t).astype(x.dtype) * x

    def diffusion(self, t):
        """`g(t) = sqrt(beta(t) (1 - exp(-2 B(t))))` for a scalar `t`, with
        `B(t) = int_0^t beta`; a scalar."""
        B = _vp_integral(self.beta_min, self.beta_max, self.T, t)
        return jnp.sqrt(self.beta(t) * -jnp.expm1(-2 * B))

    def marginal(self, t):
        """`(alpha_t, sigma_t)` for a scalar `t`: `alpha_t = exp(-B(t) / 2)` with
        `B(t) = int_0^t beta`, and `sigma_t^2 = (1 - alpha_t^2)^2`; two scalars."""
        B = _vp_integral(self.beta_min, self.beta_max, self.T, t)
        return jnp.exp(-0.5 * B), -jnp.expm1(-B)

    def prior_std(self):
        """`1`: the prior is `N(0, I)`; a scalar."""
        return jnp.ones_like(self.T)


class VESDE(AbstractSDE):
    r"""The variance-exploding SDE (the continuous limit of SMLD / NCSN).

    $$dx = \sqrt{\frac{d[\sigma^2(t)]}{dt}}\, dW,\qquad
    \sigma(t) = \sigma_\min\, (\sigma_\max / \sigma_\min)^{t / T},$$

    so `g(t) = sigma(t) sqrt(2 ln(sigma_max / sigma_min) / T)`. The marginal of
    the SDE started at `x_0` at `t = 0` is `alpha_t = 1`,
    `sigma_t^2 = sigma(t)^2 - sigma_min^2` (Song et al. 2021, eq. 29). The prior is
    `N(0, sigma_max^2 I)` (Song et al.'s choice; it neglects the data's spread
    against `sigma_max`).

    **Arguments:**

    - `sigma_min`, `sigma_max`: the noise scales at `t = 0` and `t = T`
        (`0 < sigma_min < sigma_max`); defaults 0.01 and 50.
    - `T`: the final time (> 0), default 1.

    **Reference:** Song et al., ICLR (2021), Appendix B; Y. Song and S. Ermon,
    "Generative modeling by estimating gradients of the data distribution",
    NeurIPS (2019).
    """

    sigma_min: Scalar = eqx.field(converter=as_param)
    sigma_max: Scalar = eqx.field(converter=as_param)
    T: Scalar = eqx.field(converter=as_param)

    def __init__(self, sigma_min=0.01, sigma_max=50.0, T=1.0):
        self.sigma_min = sigma_min
        self.sigma_max = sigma_max
        self.T = T

    def __check_init__(self):
        _check_params(
            "VESDE",
            [
                (self.sigma_min > 0, "`sigma_min` must be > 0."),
                (
                    self.sigma_max > self.sigma_min,
                    "`sigma_max` must be > `sigma_min`.",
                ),
                (self.T > 0, "`T` must be > 0."),
            ],
        )

    def _log_ratio(self):
        return jnp.log(self.sigma_max / self.sigma_min)

    def sigma(self, t: RealScalarLike) -> Scalar:
        """The noise scale `sigma(t)` for a scalar `t`; a scalar."""
        return self.sigma_min * jnp.exp(self._log_ratio() * t / self.T)

    def drift(self, t, x):
        """`f(t, x) = 0` (shape `(d,)`, like `x`)."""
        del t
        return jnp.zeros_like(x)

    def diffusion(self, t):
        """`g(t) = sigma(t) sqrt(2 ln(sigma_max / sigma_min) / T)` for a scalar
        `t`; a scalar."""
        return self.sigma(t) * jnp.sqrt(2 * self._log_ratio() / self.T)

    def marginal(self, t):
        """`(alpha_t, sigma_t)` for a scalar `t`: `alpha_t = 1` and
        `sigma_t^2 = sigma(t)^2 - sigma_min^2`; two scalars."""
        growth = jnp.expm1(2 * self._log_ratio() * t / self.T)
        return jnp.ones_like(growth), self.sigma_min * jnp.sqrt(growth)

    def prior_std(self):
        """`sigma_max`: the prior is `N(0, sigma_max^2 I)`; a scalar."""
        return self.sigma_max
