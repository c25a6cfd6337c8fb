"""Score models: the entry checks shared by the diffusion verbs, and denoising
score matching."""

from collections.abc import Callable
from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .._system._checks import cast_floats, check_finite
from ._sde import AbstractSDE


def check_sde(sde) -> None:
    if not isinstance(sde, AbstractSDE):
        raise ValueError(
            f"`sde` must be a dynjax SDE (`dynjax.VPSDE()`, `dynjax.SubVPSDE()` or "
            f"`dynjax.VESDE()`), got {type(sde).__name__}."
        )


def check_t_min(t_min, sde: AbstractSDE, what: str) -> None:
    """`0 < t_min < T`, checked where the values are concrete (trace time)."""
    if isinstance(t_min, jax.core.Tracer):
        return
    t_min_value = float(t_min)
    if not t_min_value > 0:
        raise ValueError(
            f"`t_min` must be > 0, got {t_min_value!r}: {what}, and the score of the "
            "data is singular at t = 0. Pass a small positive time such as "
            "`t_min=1e-3` (sampling) or `1e-5` (likelihoods, training)."
        )
    if isinstance(sde.T, jax.core.Tracer):
        return
    T = float(sde.T)
    if not t_min_value < T:
        raise ValueError(
            f"`t_min` (= {t_min_value!r}) must be below the SDE's final time "
            f"`T` (= {T!r}): {what}. Pass a smaller `t_min` (e.g. 1e-3) or an SDE "
            "with a larger `T`."
        )


def check_score(score_model, d: int, dtype) -> None:
    """Evaluate `score_model(t, x)` abstractly and check it returns shape `(d,)`.

    Raises `ValueError` if the call itself fails (e.g. a model built for another
    `d`) or returns anything but shape `(d,)`.
    """
    t = jax.ShapeDtypeStruct((), dtype)
    x = jax.ShapeDtypeStruct((d,), dtype)
    try:
        out = eqx.filter_eval_shape(score_model, t, x)
    except Exception as e:
        raise ValueError(
            f"`score_model(t, x)` failed for a scalar time `t` and `x` of shape "
            f"({d},) and dtype {jnp.dtype(dtype).name}, with {type(e).__name__}: "
            f"{e}\nCheck that d={d} (the sample dimension `d` passed to the verb, or "
            "the second axis of the data) matches the dimension the score model was "
            "built for, and that the model is called as `score_model(t, x)` with a "
            "scalar `t` (wrap an `eqx.nn.MLP` taking one input in a Module whose "
            "`__call__(self, t, x)` feeds it `jnp.concatenate([x, t[None]])`)."
        ) from e
    if not isinstance(out, jax.ShapeDtypeStruct) or out.shape != (d,):
        got = (
            f"shape {out.shape}"
            if isinstance(out, jax.ShapeDtypeStruct)
            else f"a {type(out).__name__}"
        )
        raise ValueError(
            f"score_model(t, x) returned {got} for data of dimension d={d}; the "
            f"score is the gradient of log p_t(x), so it must return one value per "
            f"data dimension, shape ({d},). Check the model's output size (e.g. "
            f"`out_size={d}` of an `eqx.nn.MLP`) against the data's last axis."
        )


def check_data(x, name: str = "x") -> Float[Array, "n d"]:
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.inexact):
        x = x.astype(jnp.result_type(float))
    if x.ndim != 2:
        raise ValueError(
            f"`{name}` must be a batch of samples of shape (n, d), got shape "
            f"{x.shape}. Pass one sample as `{name}[None]`."
        )
    return check_finite(
        x,
        f"`{name}` contains non-finite values (NaN or inf); remove or impute those "
        "rows before passing the data.",
    )


Weighting = Literal["sigma2", "likelihood"] | Callable


@eqx.filter_jit
def _dsm(score_model, sde, x, key, t_min, weighting):
    n, d = x.shape
    k_t, k_eps = jax.random.split(key)
    t = jax.random.uniform(k_t, (n,), x.dtype, minval=t_min, maxval=sde.T)
    eps = jax.random.normal(k_eps, (n, d), x.dtype)
    alpha, sigma = jax.vmap(sde.marginal)(t)
    x_t = alpha[:, None] * x + sigma[:, None] * eps
    score = jax.vmap(score_model)(t, x_t)
    # sigma^2 |s + eps / sigma|^2 = |sigma s + eps|^2: the noise-prediction form.
    residual = jnp.sum((sigma[:, None] * score + eps) ** 2, axis=-1)
    if weighting == "sigma2":
        per_sample = residual
    else:
        if weighting == "likelihood":
            lam = jax.vmap(sde.diffusion)(t) ** 2
        else:
            lam = jax.vmap(weighting)(t)
        per_sample = lam / sigma**2 * residual
    return jnp.mean(per_sample)


def score_matching_loss(
    score_model: Callable,
    sde: AbstractSDE,
    x: Float[Array, "n d"],
    key: PRNGKeyArray,
    *,
    t_min: float = 1e-5,
    weighting: Weighting = "sigma2",
) -> Float[Array, ""]:
    r"""The denoising score-matching loss of a score model on a batch of data.

    For each row `x_0` of `x` a time `t ~ U(t_min, T)` and a noise
    `eps ~ N(0, I)` are drawn, the sample is noised with the SDE's transition
    kernel, `x_t = alpha_t x_0 + sigma_t eps`, and the model is regressed onto the
    kernel's score `-eps / sigma_t` (Song et al. 2021, eq. 7):

    $$L = \mathbb{E}_{t, x_0, \epsilon}\; \lambda(t)\,
    \big\| s_\theta(t, x_t) + \epsilon / \sigma_t \big\|^2 .$$

    With the default weighting `lambda(t) = sigma_t^2` this is the
    noise-prediction loss `E |sigma_t s_theta(t, x_t) + eps|^2`. The squared norm
    is summed over the `d` coordinates and averaged over the batch. Its minimum
    over all models is reached at the true score of the noised data and is not
    zero: for each `t` it is `d - sigma_t^2 E|grad log p_t(x_t)|^2` (by Tweedie's
    formula `E[eps | x_t] = -sigma_t grad log p_t(x_t)`); a model that differs
    from it by `delta` pays `E[lambda(t) |delta|^2]` more.

    **Arguments:**

    - `score_model`: a callable (e.g. an `eqx.Module`) `score_model(t, x)`
        taking a scalar time and a state of shape `(d,)` and returning the score,
        shape `(d,)`.
    - `sde`: a `dynjax.VPSDE`, `dynjax.SubVPSDE` or `dynjax.VESDE`.
    - `x`: a batch of data, shape `(n, d)`, floating point; its dtype is the
        dtype of the computation (the floating-point leaves of `score_model` and
        `sde` are cast to it).
    - `key`: a PRNG key for the times and the noise.
    - `t_min`: the smallest diffusion time (`0 < t_min < T`, default `1e-5`, as
        in Song et al. 2021); the score of the data itself (`t = 0`) is singular
        for data on a low-dimensional set.
    - `weighting`: `lambda(t)`: `"sigma2"` (default, `sigma_t^2`, Song et al.
        2021 eq. 7), `"likelihood"` (`g(t)^2`, which makes the loss a bound on
        the negative log-likelihood: Song, Durkan, Murray and Ermon, NeurIPS
        2021), or a callable `t -> lambda(t)`.

    **Returns:**

    The loss, a scalar of `x`'s dtype; differentiable with respect to the model.
    The signature fits `dynjax.fit`:
    `loss = lambda model, batch, key: dynjax.score_matching_loss(model, sde, batch,
    key)`.

    **Raises:**

    `ValueError` if `x` is not `(n, d)` or contains NaN or inf (concrete data;
    traced data fails at run time), if `score_model(t, x)` fails for `x` of
    shape `(d,)` (e.g. a model built for another `d`) or its output shape is
    not `(d,)`, if `t_min <= 0` or `t_min >= T`, or for an unknown `weighting`.

    **Reference:** P. Vincent, "A connection between score matching and
    denoising autoencoders", Neural Computation 23 (2011); Song et al.,
    "Score-based generative modeling through stochastic differential equations",
    ICLR (2021), eq. 7.
    """
    check_sde(sde)
    x = check_data(x)
    check_t_min(t_min, sde, "diffusion times are drawn from U(t_min, T)")
    if not callable(weighting) and weighting not in ("sigma2", "likelihood"):
        raise ValueError(
            f"`weighting` must be 'sigma2' (lambda = sigma_t^2), 'likelihood' "
            f"(lambda = g(t)^2) or a callable t -> lambda(t), got {weighting!r}."
        )
    check_score(score_model, x.shape[1], x.dtype)
    (score_model, sde), _ = cast_floats((score_model, sde), x.dtype)
    return _dsm(score_model, sde, x, key, jnp.asarray(t_min, x.dtype), weighting)
