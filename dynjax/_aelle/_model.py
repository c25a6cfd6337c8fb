"""The AeLLE autoencoder: a latent representation of Lyapunov spectra that is
trained to predict the performance of the network each spectrum came from."""

from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from .._training._fit import fit, FitResult
from ._analysis import (
    check_performance,
    check_spectra,
    clip_spectra,
    default_floor,
)


def _linear_stack(sizes, key, dtype):
    keys = jr.split(key, len(sizes) - 1)
    return tuple(
        eqx.nn.Linear(i, o, key=k, dtype=dtype)
        for i, o, k in zip(sizes[:-1], sizes[1:], keys)
    )


def _apply(layers, x, activation):
    """The layers on the last axis of `x` (any leading batch axes), `activation`
    between them, none after the last."""
    for n, layer in enumerate(layers):
        x = x @ layer.weight.T + layer.bias
        if n < len(layers) - 1:
            x = activation(x)
    return x


class AeLLE(eqx.Module):
    r"""The Lyapunov autoencoder of AeLLE (Vogt, Zheng & Shlizerman 2022).

    An encoder MLP maps a spectrum of `L` exponents to a latent vector of
    `latent_size` (default 32); a decoder MLP maps it back to `L` exponents; a
    linear head maps it to a predicted performance. Trained with `fit_aelle`
    on reconstruction plus weighted prediction (`aelle_loss`), the latent space
    keeps what the spectrum says about performance, and good networks separate
    from bad ones in it.

    **Architecture** (as in the reference code's `AEPredNet`): encoder
    `L -> widths[0] -> widths[1] -> latent_size`, decoder the mirror
    `latent_size -> widths[1] -> widths[0] -> L`, `tanh` between layers and no
    activation on the latent or the output, head `Linear(latent_size, 1)`. The
    reference uses `widths = (L // 2, L // 4)` for its `L = 1024` interpolated
    spectra; here the default is that with each width at least `latent_size`,
    so short spectra do not squeeze the code through a narrower layer. The
    reference's dropout (`p = 0.1`) is left out: the model is deterministic.

    **Standardization.** The model reads and writes exponents in their own
    units (nats per step) and standardizes inside: an exponent below `floor`
    (`-inf` for a direction the dynamics collapses) is raised to `floor`, the
    mean spectrum `spectrum_mean` is subtracted and the difference divided by
    one scale `spectrum_scale` (the root-mean-square deviation over networks
    and exponents, so no exponent is amplified and the reconstruction loss is
    the mean squared error in exponent units over `spectrum_scale^2`). The
    performance is standardized by `performance_mean` and `performance_scale`
    (its mean and standard deviation). `fit_aelle` sets all five from the
    training networks; they are not trained (`jax.lax.stop_gradient`). A new
    model has mean 0, scale 1 and `floor = -inf` (no clipping).

    **Arguments:**

    - `n_exponents`: `L`, the length of the spectra.
    - `latent_size`: the latent dimension (default 32, as in the paper).
    - `widths`: the two hidden widths `(w1, w2)` (default
        `(max(L // 2, latent_size), max(L // 4, latent_size))`).
    - `activation`: between layers (default `jnp.tanh`, the reference's).
    - `dtype`: of the parameters (default JAX's default float).
    - `key`: a `jax.random.key` for the initial weights (equinox's default
        initialization of `eqx.nn.Linear`).

    **Methods** (`spectra` of shape `(L,)` or `(n, L)`):

    - `encode(spectra)`: the latent vectors, `(latent_size,)` or `(n, latent_size)`.
    - `decode(latents)`: the reconstructed spectra, in exponent units.
    - `predict(spectra)`: the predicted performance, `()` or `(n,)`, in the
        performance's units.

    **Reference:** R. Vogt, Y. Zheng, E. Shlizerman, "Lyapunov-guided
    representation of recurrent neural network performance", arXiv:2204.04876
    (2022); reference code: github.com/shlizee/LyapunovAutoEncode.
    """

    encoder: tuple[eqx.nn.Linear, ...]
    decoder: tuple[eqx.nn.Linear, ...]
    head: eqx.nn.Linear
    spectrum_mean: Float[Array, " L"]
    spectrum_scale: Float[Array, ""]
    performance_mean: Float[Array, ""]
    performance_scale: Float[Array, ""]
    floor: Float[Array, ""]
    activation: Callable = eqx.field(static=True)

    def __init__(
        self,
        n_exponents: int,
        *,
        latent_size: int = 32,
        widths: Sequence[int] | None = None,
        activation: Callable = jnp.tanh,
        dtype=None,
        key: PRNGKeyArray,
    ):
        for name, v in (("n_exponents", n_exponents), ("latent_size", latent_size)):
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"`{name}` must be a positive int, got {v!r}.")
        if widths is None:
            widths = (
                max(n_exponents // 2, latent_size),
                max(n_exponents // 4, latent_size),
            )
        widths = tuple(widths)
        if len(widths) != 2 or not all(
            isinstance(w, (int, np.integer)) and w >= 1 for w in widths
        ):
            raise ValueError(
                "`widths` must be two positive ints (the hidden widths), got "
                f"{widths!r}."
            )
        dtype = jnp.result_type(float) if dtype is None else dtype
        k_enc, k_dec, k_head = jr.split(key, 3)
        self.encoder = _linear_stack((n_exponents, *widths, latent_size), k_enc, dtype)
        self.decoder = _linear_stack(
            (latent_size, *widths[::-1], n_exponents), k_dec, dtype
        )
        self.head = eqx.nn.Linear(latent_size, 1, key=k_head, dtype=dtype)
        self.spectrum_mean = jnp.zeros(n_exponents, dtype)
        self.spectrum_scale = jnp.ones((), dtype)
        self.performance_mean = jnp.zeros((), dtype)
        self.performance_scale = jnp.ones((), dtype)
        self.floor = jnp.array(-jnp.inf, dtype)
        self.activation = activation

    @property
    def n_exponents(self) -> int:
        return self.encoder[0].in_features

    @property
    def latent_size(self) -> int:
        return self.head.in_features

    def _check(self, spectra):
        spectra = jnp.asarray(spectra)
        if spectra.ndim not in (1, 2) or spectra.shape[-1] != self.n_exponents:
            raise ValueError(
                f"This AeLLE reads spectra of {self.n_exponents} exponents, shape "
                f"({self.n_exponents},) or (n, {self.n_exponents}); got shape "
                f"{spectra.shape}. Interpolate spectra of other lengths with "
                "`interpolate_spectra`."
            )
        return spectra

    def _standardize(self, spectra):
        mean, scale, floor = jax.lax.stop_gradient(
            (self.spectrum_mean, self.spectrum_scale, self.floor)
        )
        return (clip_spectra(spectra, floor) - mean) / scale

    def _latent(self, z):
        return _apply(self.encoder, z, self.activation)

    def _reconstruct(self, latent):
        return _apply(self.decoder, latent, self.activation)

    def _predict(self, latent):
        return _apply((self.head,), latent, self.activation)[..., 0]

    def encode(self, spectra: Float[ArrayLike, "*n L"]) -> Float[Array, "*n latent"]:
        """The latent representation of `spectra` (`(L,)` or `(n, L)`)."""
        return self._latent(self._standardize(self._check(spectra)))

    def decode(self, latents: Float[ArrayLike, "*n latent"]) -> Float[Array, "*n L"]:
        """The spectra reconstructed from `latents`, in exponent units."""
        mean, scale = jax.lax.stop_gradient((self.spectrum_mean, self.spectrum_scale))
        return self._reconstruct(jnp.asarray(latents)) * scale + mean

    def predict(self, spectra: Float[ArrayLike, "*n L"]) -> Float[Array, "*n"]:
        """The performance predicted from `spectra`, in the performance's units."""
        mean, scale = jax.lax.stop_gradient(
            (self.performance_mean, self.performance_scale)
        )
        return self._predict(self.encode(spectra)) * scale + mean


def _loss_parts(model: AeLLE, spectra, performance):
    z = model._standardize(spectra)
    latent = model._latent(z)
    reconstruction = jnp.mean((model._reconstruct(latent) - z) ** 2)
    mean, scale = jax.lax.stop_gradient(
        (model.performance_mean, model.performance_scale)
    )
    error = model._predict(latent) - (performance - mean) / scale
    return reconstruction, error**2


def aelle_loss(
    model: AeLLE,
    spectra: Float[ArrayLike, "n L"],
    performance: Float[ArrayLike, " n"],
    alpha: float | Float[ArrayLike, " n"],
) -> Float[Array, ""]:
    r"""The AeLLE training loss: reconstruction plus weighted prediction.

    With `z_i` the standardized spectrum of network `i` (see `AeLLE`),
    `\hat z_i` its reconstruction, `p_i` the standardized performance and
    `\hat p_i` its prediction from the latent vector,

    $$\mathcal{L} = \frac{1}{n L} \sum_{i, j} (\hat z_{ij} - z_{ij})^2
      + \frac{1}{n} \sum_i \alpha_i (\hat p_i - p_i)^2.$$

    Both terms are mean squared errors in standardized units, so `alpha ~ 1`
    weighs them alike. (The reference code uses the mean absolute error for the
    reconstruction of raw exponents and weights of 5 to 400; here the weight
    is relative to standardized terms.)

    **Arguments:**

    - `model`: an `AeLLE`.
    - `spectra`: shape `(n, L)` (exponents below `model.floor` are raised to it).
    - `performance`: shape `(n,)`.
    - `alpha`: the prediction weight, a scalar or one per network `(n,)`.

    **Returns:**

    The loss, a scalar.
    """
    spectra = model._check(spectra)
    reconstruction, prediction = _loss_parts(model, spectra, jnp.asarray(performance))
    return reconstruction + jnp.mean(jnp.asarray(alpha) * prediction)


def _aelle_fit_loss(model, batch, key):
    del key
    spectra, performance, alpha = batch
    reconstruction, prediction = _loss_parts(model, spectra, performance)
    prediction = jnp.mean(prediction)
    # Every row of `alpha` holds the stage's weight (data, not a constant of the
    # compiled program, so that all stages share one compilation).
    value = reconstruction + alpha[0] * prediction
    return value, {"reconstruction": reconstruction, "prediction": prediction}


def _stages(alpha_schedule, n_steps: int) -> list[tuple[float, int]]:
    alphas = np.atleast_1d(np.asarray(alpha_schedule, dtype=float))
    if (
        alphas.ndim != 1
        or alphas.size == 0
        or not np.all(np.isfinite(alphas) & (alphas >= 0))
    ):
        raise ValueError(
            "`alpha_schedule` must be a weight >= 0 or a non-empty sequence of "
            f"weights >= 0 (one per stage), got {alpha_schedule!r}."
        )
    cuts = [round(i * n_steps / alphas.size) for i in range(alphas.size + 1)]
    return [(float(a), b - c) for a, c, b in zip(alphas, cuts[:-1], cuts[1:])]


def fit_aelle(
    model: AeLLE,
    spectra: Float[ArrayLike, "n L"],
    performance: Float[ArrayLike, " n"],
    optimizer: optax.GradientTransformation,
    *,
    n_steps: int,
    key: PRNGKeyArray | None = None,
    alpha_schedule: float | Sequence[float] = (0.25, 0.5, 1.0, 2.0),
    batch_size: int | None = None,
    standardize: bool = True,
    floor: float | None = None,
    chunk_size: int = 100,
    progress: bool = True,
    resume: FitResult | None = None,
) -> FitResult:
    r"""Train an AeLLE autoencoder on the spectra of the training networks.

    Minimizes `aelle_loss` (reconstruction + `alpha` x prediction, standardized
    mean squared errors) with `optimizer` through `dynjax.fit`: compiled chunks
    of steps, a minibatch of `batch_size` networks drawn by key at each step, a
    progress bar, a stop at the first non-finite loss.

    **The prediction weight** ramps up in stages, as in the reference code
    ("best to start low and increase"; its default weights 5, 5, 10, 20, one
    stage of 1000 epochs each): `alpha_schedule = (a_1, ..., a_m)` splits the
    `n_steps` into `m` equal stages, stage `k` weighting the prediction by
    `a_k`. The default `(0.25, 0.5, 1, 2)` first shapes the latent space by
    reconstruction, then pulls performance into it; a single number is a
    constant weight. Every stage shares one compilation (the weight travels
    with the data). The `losses` of different stages are not comparable (the
    weight changes); `aux["reconstruction"]` and `aux["prediction"]` of the
    result are the two terms at every step.

    **Standardization** (with `standardize=True`, and not on `resume`): before
    the first step, the model's `floor` is set to `floor` (default: the
    smallest finite exponent of `spectra`; `-inf` exponents, directions that
    the dynamics collapses, are raised to it), its `spectrum_mean` to the mean
    spectrum, its `spectrum_scale` to the root-mean-square deviation from it
    (1 if all spectra are equal), and its `performance_mean`,
    `performance_scale` to the mean and standard deviation of `performance`
    (1 if constant). These are kept fixed in training.

    **Arguments:**

    - `model`: an `AeLLE` with `n_exponents == L`.
    - `spectra`: the training networks' spectra, shape `(n, L)`, one per row.
    - `performance`: their performance (e.g. held-out accuracy), shape `(n,)`.
    - `optimizer`: any `optax.GradientTransformation` (the reference: Adam,
        learning rate `1e-4`).
    - `n_steps`: the total number of optimizer steps over all stages.
    - `key`: a `jax.random.key` for the minibatches (required unless `resume`).
    - `alpha_schedule`: the prediction weight per stage (see above).
    - `batch_size`: networks per step (`None`, the default: all; the
        reference uses 128).
    - `standardize`, `floor`: see above.
    - `chunk_size`, `progress`: as in `dynjax.fit`.
    - `resume`: a `FitResult` of an earlier call: `n_steps` more steps through
        `alpha_schedule`, on the resumed (already standardized) model.

    **Returns:**

    A `dynjax.FitResult`: `model` (the trained `AeLLE`), `losses` (every step),
    `aux` (`{"reconstruction", "prediction"}`, every step), `result`.

    **Raises:**

    `ValueError` if `spectra` is ragged (spectra of different lengths: use
    `interpolate_spectra`), not `(n, L)` with `L == model.n_exponents`, or
    holds NaN or `+inf`; if `performance` is not `(n,)` or not finite; for a
    bad `alpha_schedule`; and `dynjax.fit`'s own errors (`batch_size`,
    `n_steps`).

    !!! Example

        ```python
        train, val, test = dynjax.aelle.split_networks(len(spectra), jr.key(0))
        model = dynjax.aelle.AeLLE(spectra.shape[1], key=jr.key(1))
        out = dynjax.aelle.fit_aelle(model, spectra[train], accuracy[train],
                                     optax.adam(1e-3), n_steps=4000, key=jr.key(2))
        latents = out.model.encode(spectra)
        ```

    **Reference:** R. Vogt, Y. Zheng, E. Shlizerman, "Lyapunov-guided
    representation of recurrent neural network performance", arXiv:2204.04876
    (2022).
    """
    if not isinstance(model, AeLLE):
        raise ValueError(
            f"`model` must be a dynjax.aelle.AeLLE, got {type(model).__name__}."
        )
    x = check_spectra(spectra)
    perf = check_performance(performance, x.shape[0])
    if x.shape[1] != model.n_exponents:
        raise ValueError(
            f"The model reads spectra of {model.n_exponents} exponents, but "
            f"`spectra` has {x.shape[1]} per network; build the AeLLE with "
            f"n_exponents={x.shape[1]} or interpolate the spectra "
            f"(`interpolate_spectra(spectra, {model.n_exponents})`)."
        )
    if not isinstance(n_steps, (int, np.integer)) or n_steps < 0:
        raise ValueError(f"`n_steps` must be an int >= 0, got {n_steps!r}.")
    stages = _stages(alpha_schedule, int(n_steps))
    dtype = model.spectrum_mean.dtype
    if resume is not None:
        model = resume.model
    elif standardize:
        fl = default_floor(x) if floor is None else float(floor)
        clipped = np.maximum(x, fl)
        mean = clipped.mean(axis=0)
        scale = np.sqrt(np.mean((clipped - mean) ** 2))
        p_scale = perf.std()
        stats = (
            mean,
            scale if scale > 0 else 1.0,
            perf.mean(),
            p_scale if p_scale > 0 else 1.0,
            fl,
        )
        model = eqx.tree_at(
            lambda m: (
                m.spectrum_mean,
                m.spectrum_scale,
                m.performance_mean,
                m.performance_scale,
                m.floor,
            ),
            model,
            tuple(jnp.asarray(s, dtype) for s in stats),
        )
    fl = model.floor
    xs = jnp.asarray(np.maximum(x, float(fl)), dtype)
    if not np.all(np.isfinite(np.asarray(xs))):
        raise ValueError(
            "`spectra` holds -inf but the model's `floor` is -inf (not "
            "standardized): fit with `standardize=True` or pass a finite `floor`."
        )
    ys = jnp.asarray(perf, dtype)
    # Train everything but the standardization statistics.
    trainable = jax.tree.map(eqx.is_inexact_array, model)
    trainable = eqx.tree_at(
        lambda m: (
            m.spectrum_mean,
            m.spectrum_scale,
            m.performance_mean,
            m.performance_scale,
            m.floor,
        ),
        trainable,
        (False,) * 5,
    )
    out = resume
    for alpha, steps in stages:
        data = (xs, ys, jnp.full(xs.shape[0], alpha, dtype))
        out = fit(
            _aelle_fit_loss,
            model if out is None else out.model,
            optimizer,
            n_steps=steps,
            key=key if out is None else None,
            data=data,
            batch_size=batch_size,
            chunk_size=chunk_size,
            progress=progress,
            resume=out,
            trainable=trainable,
            has_aux=True,
        )
        if out.stopped_at >= 0:
            break
    return out
