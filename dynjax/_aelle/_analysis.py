"""Analysis of a population of networks by their Lyapunov spectra (AeLLE).

Plain arrays in, plain arrays out: `spectra` of shape `(n_networks, L)` (each row
one network's exponents, descending, one common length `L`) and `performance` of
shape `(n_networks,)`. How the spectra were computed does not matter here.
"""

from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optimistix as optx
from jaxtyping import Array, ArrayLike, Bool, Float, Int, PRNGKeyArray

from .._lyapunov._dimensions import kaplan_yorke_dimension
from .._results import RESULTS


# --- input checks -----------------------------------------------------------------


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def check_spectra(spectra, name: str = "spectra") -> np.ndarray:
    """`spectra` as a float NumPy array `(n, L)`; raises `ValueError` for ragged,
    non-2-D, empty, NaN or `+inf` input (`-inf`, a collapsed direction, is kept)."""
    if isinstance(spectra, (list, tuple)):
        rows = [np.asarray(s) for s in spectra]
        lengths = sorted({r.shape[0] if r.ndim == 1 else -1 for r in rows})
        if -1 in lengths:
            raise ValueError(
                f"Every entry of `{name}` must be a 1-D spectrum; got shapes "
                f"{sorted({r.shape for r in rows})}."
            )
        if len(lengths) > 1:
            raise ValueError(
                f"The spectra in `{name}` have different lengths {lengths} (networks "
                "of different sizes); interpolate them to one common length first: "
                f"`interpolate_spectra({name}, length)`."
            )
    arr = np.asarray(spectra)
    if arr.dtype == object:
        raise ValueError(
            f"`{name}` is ragged (spectra of different lengths); interpolate them to "
            f"one common length first: `interpolate_spectra({name}, length)`."
        )
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(
            f"`{name}` must have shape (n_networks, L) with one spectrum per row; "
            f"got shape {arr.shape}. (One network's spectrum: `{name}[None]`.)"
        )
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.result_type(float))
    bad = np.isnan(arr) | (arr == np.inf)
    if bad.any():
        row = int(np.argwhere(bad)[0][0])
        raise ValueError(
            f"`{name}` holds {int(bad.sum())} NaN or +inf value(s), the first in "
            f"network {row}. A spectrum that did not converge cannot be analysed: "
            "recompute it (longer run, smaller step) or drop that network. (-inf, "
            "a direction the dynamics collapses, is allowed: it is clipped to "
            "`floor`.)"
        )
    return arr


def check_performance(performance, n: int, name: str = "performance") -> np.ndarray:
    perf = np.asarray(performance)
    if perf.ndim != 1 or perf.shape[0] != n:
        raise ValueError(
            f"`{name}` must have shape ({n},), one value per network (row of "
            f"`spectra`); got shape {perf.shape}."
        )
    if not np.issubdtype(perf.dtype, np.floating):
        perf = perf.astype(np.result_type(float))
    if not np.all(np.isfinite(perf)):
        raise ValueError(
            f"`{name}` holds NaN or inf (network {int(np.argmin(np.isfinite(perf)))}); "
            "give every network a finite performance or drop it."
        )
    return perf


def default_floor(spectra: np.ndarray) -> float:
    """The smallest finite exponent (the clip level of `-inf`)."""
    finite = spectra[np.isfinite(spectra)]
    if finite.size == 0:
        raise ValueError(
            "Every exponent is -inf (every direction collapses); there is nothing to "
            "analyse. Pass an explicit `floor=` to give -inf a value."
        )
    return float(finite.min())


def clip_spectra(spectra, floor):
    """`max(spectra, floor)`: `-inf` (and anything below `floor`) becomes `floor`."""
    return jnp.maximum(spectra, floor)


# --- interpolation ----------------------------------------------------------------


def interpolate_spectra(
    spectra: Sequence[Float[ArrayLike, " k"]] | Float[ArrayLike, "n k"], length: int
) -> Float[np.ndarray, "n length"]:
    r"""Interpolate spectra of different lengths to one common length.

    Networks of different state sizes `k` have spectra of different lengths. As
    in AeLLE, each spectrum is read as a function of the normalized index
    `x_i = i / (k - 1)` on `[0, 1]` (the largest exponent at 0, the smallest at
    1) and linearly interpolated to the `length` points `j / (length - 1)`:
    the first and last exponents are kept, and a spectrum that is linear in its
    index stays exactly linear. (The reference code doubles the length by
    inserting midpoints between neighbours, `k -> 2k` with the last value
    extrapolated, which needs `length / k` to be a power of two; this is the
    same linear interpolation on any grid.) A spectrum of length 1 becomes a
    constant. Where an interpolation point leans on a `-inf` exponent (a
    collapsed direction), the result is `-inf`.

    **Arguments:**

    - `spectra`: a list of 1-D spectra (any lengths), or a 2-D array `(n, k)`.
    - `length`: the common length `L >= 1`.

    **Returns:**

    A float NumPy array `(n, length)`.

    **Raises:**

    `ValueError` for an empty list, an entry that is not 1-D, NaN or `+inf`
    exponents, or `length < 1`.

    **Reference:** R. Vogt, Y. Zheng, E. Shlizerman, "Lyapunov-guided
    representation of recurrent neural network performance", arXiv:2204.04876
    (2022).
    """
    if not isinstance(length, (int, np.integer)) or length < 1:
        raise ValueError(f"`length` must be an int >= 1, got {length!r}.")
    rows = [np.asarray(s) for s in spectra]
    if not rows:
        raise ValueError("`spectra` is empty; pass at least one spectrum.")
    out = np.empty((len(rows), int(length)), dtype=np.result_type(float, *rows))
    target = np.linspace(0.0, 1.0, int(length))
    for n, s in enumerate(rows):
        if s.ndim != 1 or s.shape[0] < 1:
            raise ValueError(
                f"Every spectrum must be a non-empty 1-D array; entry {n} has shape "
                f"{s.shape}."
            )
        if np.any(np.isnan(s) | (s == np.inf)):
            raise ValueError(
                f"Spectrum {n} holds NaN or +inf; recompute it or drop that network."
            )
        k = s.shape[0]
        if k == 1:
            out[n] = s[0]
            continue
        pos = target * (k - 1)
        left = np.clip(np.floor(pos).astype(int), 0, k - 2)
        t = pos - left
        a, b = s[left], s[left + 1]
        finite = np.where(np.isfinite(s), s, 0.0)
        value = (1 - t) * finite[left] + t * finite[left + 1]
        leans_on_inf = ((t < 1) & np.isneginf(a)) | ((t > 0) & np.isneginf(b))
        out[n] = np.where(leans_on_inf, -np.inf, value)
    return out


# --- splits -----------------------------------------------------------------------


def split_networks(
    n: int, key: PRNGKeyArray, fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)
) -> tuple[Int[Array, " n_train"], Int[Array, " n_val"], Int[Array, " n_test"]]:
    """A random train/validation/test split over networks.

    The `n` networks are permuted by `key` and cut into three parts of
    `round(fractions[0] * n)`, `round(fractions[1] * n)` and the rest
    networks. Every analysis step that learns (the autoencoder, the
    classifiers) sees only the training networks; the validation networks are
    for choices made by hand (training length, penalties); the test networks
    score the result. Splitting over networks, not over spectra of one network,
    is what makes the test AUC a statement about unseen networks.

    **Arguments:**

    - `n`: the number of networks.
    - `key`: a `jax.random.key`.
    - `fractions`: three non-negative shares summing to 1 (default
        `(0.6, 0.2, 0.2)`).

    **Returns:**

    `(train, validation, test)`, sorted integer index arrays into the networks,
    disjoint and together `0, ..., n - 1`.

    **Raises:**

    `ValueError` if `fractions` are not three non-negative numbers summing to 1,
    or the training or test part would be empty.
    """
    fr = np.asarray(fractions, dtype=float)
    if fr.shape != (3,) or np.any(fr < 0) or not np.isclose(fr.sum(), 1.0):
        raise ValueError(
            "`fractions` must be three non-negative shares (train, validation, "
            f"test) summing to 1, got {fractions!r}."
        )
    if not isinstance(n, (int, np.integer)):
        raise ValueError(f"`n` must be an int (the number of networks), got {n!r}.")
    n_train, n_val = int(round(fr[0] * n)), int(round(fr[1] * n))
    n_val = min(n_val, n - n_train)
    if n_train < 1 or n - n_train - n_val < 1:
        raise ValueError(
            f"{n} networks split by {tuple(fr)} leave an empty training or test "
            "part; use more networks or other fractions."
        )
    perm = jr.permutation(key, n)
    return (
        jnp.sort(perm[:n_train]),
        jnp.sort(perm[n_train : n_train + n_val]),
        jnp.sort(perm[n_train + n_val :]),
    )


# --- ROC --------------------------------------------------------------------------


def _check_binary(scores, labels):
    scores, labels = jnp.asarray(scores), jnp.asarray(labels)
    if scores.ndim != 1 or labels.shape != scores.shape:
        raise ValueError(
            "`scores` and `labels` must be 1-D arrays of one length; got shapes "
            f"{scores.shape} and {labels.shape}."
        )
    if _is_concrete(labels):
        lab = np.asarray(labels)
        if not np.all((lab == 0) | (lab == 1)):
            raise ValueError(
                "`labels` must be binary: 0/1 or False/True (1 = the positive "
                f"class); got values {np.unique(lab)[:5]}."
            )
        if lab.all() or not lab.any():
            raise ValueError(
                "`labels` hold only one class; a ROC curve needs positives and "
                "negatives."
            )
    if _is_concrete(scores) and not np.all(np.isfinite(np.asarray(scores))):
        raise ValueError("`scores` hold NaN or inf; every score must be finite.")
    return scores, labels.astype(bool)


def roc_auc(
    scores: Float[ArrayLike, " n"], labels: Bool[ArrayLike, " n"]
) -> Float[Array, ""]:
    r"""The area under the ROC curve, by the Mann-Whitney U statistic.

    With `r_i` the rank of score `i` among all `n` scores (1 = lowest; tied
    scores share the average of their ranks) and `n_+`, `n_-` the numbers of
    positives and negatives,

    $$\mathrm{AUC} = \frac{\sum_{i: y_i = 1} r_i - n_+ (n_+ + 1) / 2}{n_+ n_-},$$

    the probability that a random positive scores above a random negative, a
    tie counting one half: the area under the ROC curve with ties drawn as
    diagonal segments, the value of scikit-learn's `roc_auc_score`. Works under
    `jit` (the checks of the labels then need concrete values and are skipped).

    **Arguments:**

    - `scores`: one real score per sample, shape `(n,)`, higher = more likely
        positive.
    - `labels`: 0/1 or bool, shape `(n,)`, both classes present.

    **Returns:**

    The AUC, a scalar in `[0, 1]` (0.5 = chance).

    **Raises:**

    `ValueError` for mismatched shapes, non-binary labels, a single class, or
    non-finite scores.

    **Reference:** D. J. Hand, R. J. Till, "A simple generalisation of the area
    under the ROC curve for multiple class classification problems", Machine
    Learning 45, 171-186 (2001), Eq. 3.
    """
    scores, labels = _check_binary(scores, labels)
    dtype = jnp.result_type(float)
    ordered = jnp.sort(scores)
    lo = jnp.searchsorted(ordered, scores, side="left")
    hi = jnp.searchsorted(ordered, scores, side="right")
    ranks = (lo + hi + 1).astype(dtype) / 2  # the average 1-based rank of the ties
    n_pos = jnp.sum(labels).astype(dtype)
    n_neg = labels.shape[0] - n_pos
    u = jnp.sum(jnp.where(labels, ranks, 0.0)) - n_pos * (n_pos + 1) / 2
    return u / (n_pos * n_neg)


def roc_curve(
    scores: Float[ArrayLike, " n"], labels: Bool[ArrayLike, " n"]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ROC curve: false- and true-positive rates at every distinct threshold.

    Samples with `score >= threshold` are called positive; the thresholds are
    the distinct scores, descending, preceded by `+inf` (nobody positive).
    Every distinct threshold gives one point (scikit-learn's `roc_curve` with
    `drop_intermediate=False`); tied scores enter together, so a tie is a
    diagonal step. The trapezoidal area under `(fpr, tpr)` is `roc_auc`.

    **Arguments:**

    - `scores`, `labels`: as in `roc_auc`.

    **Returns:**

    `(fpr, tpr, thresholds)`, NumPy arrays of one length (the number of distinct
    scores + 1), `fpr` and `tpr` non-decreasing from 0 to 1.

    **Raises:**

    As `roc_auc`.
    """
    scores, labels = _check_binary(scores, labels)
    scores, labels = np.asarray(scores), np.asarray(labels)
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], labels[order].astype(float)
    last_of_tie = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]
    tps = np.cumsum(y)[last_of_tie]
    fps = last_of_tie + 1 - tps
    tpr = np.r_[0.0, tps] / tps[-1]
    fpr = np.r_[0.0, fps] / fps[-1]
    return fpr, tpr, np.r_[np.inf, s[last_of_tie]]


# --- logistic regression ----------------------------------------------------------


class LogisticRegression(eqx.Module):
    r"""A fitted L2-penalized logistic regression (`dynjax.aelle.logistic_regression`).

    The features are standardized with the training features' mean and
    standard deviation (`feature_mean`, `feature_scale`); on those,
    `P(y = 1 | x) = sigmoid(w . z + b)`.

    **Attributes:**

    - `weights`: `w`, shape `(p,)`, on the standardized features.
    - `bias`: `b`, a scalar.
    - `feature_mean`, `feature_scale`: shape `(p,)` (a constant feature has
        scale 1).
    - `result`: `RESULTS.successful`, or the optimizer's failure code.
    """

    weights: Float[Array, " p"]
    bias: Float[Array, ""]
    feature_mean: Float[Array, " p"]
    feature_scale: Float[Array, " p"]
    result: RESULTS

    @property
    def coef(self) -> Float[Array, " p"]:
        """The weights on the raw features, `w / feature_scale`."""
        return self.weights / self.feature_scale

    @property
    def intercept(self) -> Float[Array, ""]:
        """The intercept on the raw features, `b - sum(coef * feature_mean)`."""
        return self.bias - jnp.sum(self.coef * self.feature_mean)

    def decision_function(
        self, features: Float[ArrayLike, "n p"]
    ) -> Float[Array, " n"]:
        """The log-odds `w . z + b` of each row of `features` (`(n, p)` or `(p,)`)."""
        z = (jnp.asarray(features) - self.feature_mean) / self.feature_scale
        return z @ self.weights + self.bias

    def predict_proba(self, features: Float[ArrayLike, "n p"]) -> Float[Array, " n"]:
        """`P(y = 1 | x)` of each row of `features`."""
        return jax.nn.sigmoid(self.decision_function(features))


def _as_features(features, name="features") -> np.ndarray:
    x = np.asarray(features)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 1:
        raise ValueError(
            f"`{name}` must have shape (n_samples, n_features) (or (n_samples,) for "
            f"one feature) with n_samples >= 2; got shape {np.shape(features)}."
        )
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.result_type(float))
    if not np.all(np.isfinite(x)):
        raise ValueError(f"`{name}` holds NaN or inf; every feature must be finite.")
    return x


@eqx.filter_jit
def _fit_logistic(z, y, l2, max_steps):
    dtype = z.dtype
    tol = 1e-10 if dtype == jnp.float64 else 1e-5
    sign = 2.0 * y.astype(dtype) - 1.0

    def objective(params, _):
        w, b = params
        margin = sign * (z @ w + b)
        return jnp.sum(jax.nn.softplus(-margin)) + 0.5 * l2 * jnp.sum(w**2)

    y0 = (jnp.zeros(z.shape[1], dtype), jnp.zeros((), dtype))
    sol = optx.minimise(
        objective,
        optx.BFGS(rtol=tol, atol=tol),
        y0,
        max_steps=max_steps,
        throw=False,
    )
    return sol.value, RESULTS.promote(sol.result)


def logistic_regression(
    features: Float[ArrayLike, "n p"],
    labels: Bool[ArrayLike, " n"],
    *,
    l2: float = 1.0,
    n_steps: int = 1000,
    throw: bool = True,
) -> LogisticRegression:
    r"""Fit an L2-penalized logistic regression (a linear classifier).

    The features are standardized (mean 0, standard deviation 1 over the
    samples; a constant feature is left unscaled), then the weights `w` and bias
    `b` minimize the penalized negative log-likelihood

    $$\sum_i \log\left(1 + e^{-s_i (w \cdot z_i + b)}\right)
      + \frac{\lambda}{2} \|w\|^2, \qquad s_i = 2 y_i - 1,$$

    with `lambda = l2` and the bias not penalized: scikit-learn's
    `LogisticRegression(C=1 / l2)` fitted on `StandardScaler` features. The
    objective is strictly convex for `l2 > 0`, so the minimum is unique; it is
    found by `optimistix.BFGS` (tolerance `1e-10` in float64, `1e-5` in float32)
    in one compiled solve.

    **Arguments:**

    - `features`: shape `(n, p)`, or `(n,)` for one feature; finite.
    - `labels`: 0/1 or bool, shape `(n,)`, both classes present.
    - `l2`: the penalty `lambda > 0` (default 1, scikit-learn's `C = 1`).
    - `n_steps`: the most BFGS steps (default 1000).
    - `throw`: raise if BFGS does not converge (else see `result`).

    **Returns:**

    A `LogisticRegression` with `decision_function` and `predict_proba`.

    **Raises:**

    `ValueError` for bad shapes, non-finite features, non-binary labels or a
    single class, or `l2 <= 0`; `RuntimeError` (with `throw=True`) if the
    optimizer fails.
    """
    x = _as_features(features)
    if np.shape(labels) != (x.shape[0],):
        raise ValueError(
            f"`labels` must have shape ({x.shape[0]},), one per row of `features`; "
            f"got {np.shape(labels)}."
        )
    _check_binary(jnp.zeros(x.shape[0]), labels)
    y = np.asarray(labels).astype(bool)
    if not (isinstance(l2, (int, float, np.floating)) and l2 > 0):
        raise ValueError(
            f"`l2` must be a positive number, got {l2!r}: without a penalty the "
            "fit of separable classes has no minimum (the weights grow without "
            "bound)."
        )
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    scale = np.where(std > 0, std, 1.0)
    z = jnp.asarray((x - mean) / scale)
    (w, b), result = _fit_logistic(
        z, jnp.asarray(y), jnp.asarray(l2, z.dtype), int(n_steps)
    )
    if throw and result != RESULTS.successful:
        raise RuntimeError(
            f"logistic_regression: {RESULTS[result]} (after at most {n_steps} BFGS "
            "steps). Raise `n_steps` or `l2`."
        )
    return LogisticRegression(
        weights=w,
        bias=b,
        feature_mean=jnp.asarray(mean, z.dtype),
        feature_scale=jnp.asarray(scale, z.dtype),
        result=result,
    )


# --- baselines and the comparison -------------------------------------------------


BASELINES = (
    "largest exponent",
    "mean exponent",
    "Kaplan-Yorke dimension",
    "full spectrum",
)


def baseline_features(
    spectra: Float[ArrayLike, "n L"], *, floor: float | None = None
) -> dict[str, Float[Array, "n p"]]:
    """The standard spectrum features that AeLLE is compared with.

    **Arguments:**

    - `spectra`: shape `(n, L)`, one spectrum per row (descending).
    - `floor`: the value of `-inf` exponents (default: the smallest finite
        exponent of `spectra`); every exponent below it is raised to it first.

    **Returns:**

    A dict of feature arrays, each `(n, p)`: `"largest exponent"` (`p = 1`),
    `"mean exponent"` (1), `"Kaplan-Yorke dimension"` (1,
    `dynjax.kaplan_yorke_dimension` of each row) and `"full spectrum"` (`L`).

    **Raises:**

    `ValueError` as `fit_aelle` for bad spectra.
    """
    x = check_spectra(spectra)
    floor = default_floor(x) if floor is None else floor
    lam = clip_spectra(jnp.asarray(x), floor)
    return {
        "largest exponent": jnp.max(lam, axis=1, keepdims=True),
        "mean exponent": jnp.mean(lam, axis=1, keepdims=True),
        "Kaplan-Yorke dimension": jax.vmap(kaplan_yorke_dimension)(lam)[:, None],
        "full spectrum": lam,
    }


class ClassifierComparison(eqx.Module):
    """Test-set ROC of the AeLLE latent classifier and the baselines
    (`dynjax.aelle.compare_classifiers`).

    **Attributes:**

    - `auc`: `{name: AUC}` on the test networks, the latent classifier first
        (`"AeLLE latent"`), then the baselines in `BASELINES` order.
    - `scores`: `{name: decision_function values}`, shape `(n_test,)` each.
    - `labels`: the test networks' labels, `True` = good (top half), shape
        `(n_test,)`.
    - `threshold`: the performance that separates good from bad (the median
        of the training networks').
    - `classifiers`: `{name: LogisticRegression}` fitted on the training
        networks.
    """

    auc: dict[str, Float[Array, ""]]
    scores: dict[str, Float[Array, " n_test"]]
    labels: Bool[Array, " n_test"]
    threshold: Float[Array, ""]
    classifiers: dict[str, LogisticRegression]


def compare_classifiers(
    model,
    spectra: Float[ArrayLike, "n L"],
    performance: Float[ArrayLike, " n"],
    train: Int[ArrayLike, " n_train"],
    test: Int[ArrayLike, " n_test"],
    *,
    l2: float = 1.0,
    higher_is_better: bool = True,
) -> ClassifierComparison:
    """Tell good networks from bad ones: the AeLLE latent space against the
    standard spectrum features.

    A network is *good* when its performance is above the median performance
    of the training networks (the top half; `higher_is_better=False` for a
    loss: below the median). On the training networks, a logistic regression
    (`logistic_regression`, penalty `l2`) is fitted to the AeLLE latent
    representations `model.encode(spectra)` (the latent linear classifier of
    Vogt, Zheng & Shlizerman 2022) and to each of `baseline_features`
    (largest exponent, mean exponent, Kaplan-Yorke dimension, full spectrum).
    Each is scored by its ROC AUC on the test networks.

    **Arguments:**

    - `model`: a trained `dynjax.aelle.AeLLE` (anything with `encode(spectra)
        -> (n, latent)` and a `floor`).
    - `spectra`: shape `(n, L)`, all networks.
    - `performance`: shape `(n,)`.
    - `train`, `test`: index arrays into the networks (`split_networks`).
    - `l2`: the logistic regressions' penalty (standardized features).
    - `higher_is_better`: whether larger `performance` is better.

    **Returns:**

    A `ClassifierComparison`; `dynjax.plot.roc_curves` draws it.

    **Raises:**

    `ValueError` for bad spectra or performance (as `fit_aelle`), indices out
    of range, overlapping `train` and `test`, or a split in which the training
    or test networks are all good or all bad.

    **Reference:** R. Vogt, Y. Zheng, E. Shlizerman, "Lyapunov-guided
    representation of recurrent neural network performance", arXiv:2204.04876
    (2022).
    """
    x = check_spectra(spectra)
    perf = check_performance(performance, x.shape[0])
    train, test = np.asarray(train), np.asarray(test)
    for name, idx in (("train", train), ("test", test)):
        if (
            idx.ndim != 1
            or idx.size == 0
            or not np.issubdtype(idx.dtype, np.integer)
            or idx.min() < 0
            or idx.max() >= x.shape[0]
        ):
            raise ValueError(
                f"`{name}` must be a non-empty 1-D array of network indices in "
                f"[0, {x.shape[0]}); got {idx!r}."
            )
    if np.intersect1d(train, test).size:
        raise ValueError(
            "`train` and `test` share networks; split them with `split_networks`."
        )
    threshold = float(np.median(perf[train]))
    good = perf > threshold if higher_is_better else perf < threshold
    for name, idx in (("training", train), ("test", test)):
        if good[idx].all() or not good[idx].any():
            raise ValueError(
                f"The {name} networks are all on one side of the training median "
                f"performance {threshold:.4g}; there is nothing to classify. Use more "
                "networks or a different split."
            )
    floor = float(model.floor)
    floor = floor if np.isfinite(floor) else default_floor(x)  # (an unfitted model)
    features = {"AeLLE latent": np.asarray(model.encode(jnp.asarray(x)))}
    features.update(
        {k: np.asarray(v) for k, v in baseline_features(x, floor=floor).items()}
    )
    auc, scores, classifiers = {}, {}, {}
    for name, f in features.items():
        clf = logistic_regression(f[train], good[train], l2=l2)
        s = clf.decision_function(f[test])
        classifiers[name], scores[name] = clf, s
        auc[name] = roc_auc(s, good[test])
    return ClassifierComparison(
        auc=auc,
        scores=scores,
        labels=jnp.asarray(good[test]),
        threshold=jnp.asarray(threshold),
        classifiers=classifiers,
    )
