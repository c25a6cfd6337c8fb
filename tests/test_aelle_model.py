"""AeLLE: the autoencoder, the classifiers and the plots, on synthetic spectra whose
structure is known by construction; ROC and logistic regression against
scikit-learn."""

import jax
import jax.numpy as jnp
import jax.random as jr
import matplotlib
import numpy as np
import optax
import pytest

from dynjax import plot
from dynjax._aelle._analysis import (
    baseline_features,
    compare_classifiers,
    interpolate_spectra,
    logistic_regression,
    roc_auc,
    roc_curve,
    split_networks,
)
from dynjax._aelle._model import AeLLE, aelle_loss, fit_aelle


matplotlib.use("Agg")
sklearn_metrics = pytest.importorskip("sklearn.metrics")


def _ramps(n, L, seed):
    """`lambda_i = a - b i`: two degrees of freedom per spectrum."""
    rng = np.random.default_rng(seed)
    a = rng.uniform(-0.5, 0.5, n)
    b = rng.uniform(0.01, 0.1, n)
    return a[:, None] - b[:, None] * np.arange(L), a


def _curved(n, L, seed):
    """Spectra `a - b x + c g(x)` on `x = i / (L - 1)`, with `g(0) = 0` and
    `mean(g) = 0`, so the largest exponent is `a` and the mean exponent
    `a - b mean(x)`: neither sees the curvature `c`, which sets performance."""
    rng = np.random.default_rng(seed)
    x = np.arange(L) / (L - 1)
    g = x**2 - (np.mean(x**2) / np.mean(x)) * x
    a = rng.uniform(-0.5, 0.5, n)
    b = rng.uniform(1.0, 2.0, n)  # b > 4 |c| / 3 keeps every spectrum descending
    c = rng.uniform(-0.5, 0.5, n)
    spectra = a[:, None] - b[:, None] * x + c[:, None] * g
    performance = c + 0.05 * rng.normal(size=n)
    return spectra, performance


@pytest.fixture(scope="module")
def curved_study():
    spectra, performance = _curved(400, 32, seed=0)
    train, _, test = split_networks(400, jr.key(0))
    model = AeLLE(32, key=jr.key(1))  # the default latent size, 32
    out = fit_aelle(
        model,
        spectra[train],
        performance[train],
        optax.adam(optax.cosine_decay_schedule(3e-3, 2000)),
        n_steps=2000,
        key=jr.key(2),
        progress=False,
    )
    result = compare_classifiers(out.model, spectra, performance, train, test)
    return spectra, performance, out, result


# --- (a) reconstruction of spectra of known shape -----------------------------------


@pytest.mark.parametrize("latent_size", [2, 32])
def test_reconstructs_linear_ramps(latent_size):
    # Linear ramps span a 2-D affine space: PCA with 2 components (computed here,
    # independently) reconstructs them to rounding, so a latent of size >= 2
    # can. Bound: the held-out reconstruction error, relative to the population's
    # spread ||X - mean(X)||, below 5 %. 2000 Adam steps reach 0.4-1.5 % over
    # seeds; a latent that carried nothing (reconstructing the mean spectrum)
    # gives 100 %.
    L = 32
    spectra, a = _ramps(300, L, seed=1)
    centred = spectra - spectra.mean(0)
    u, s, vt = np.linalg.svd(centred, full_matrices=False)
    pca2 = centred @ vt[:2].T @ vt[:2]
    assert np.linalg.norm(pca2 - centred) < 1e-12 * np.linalg.norm(centred)

    train, _, test = split_networks(300, jr.key(3))
    model = AeLLE(L, latent_size=latent_size, key=jr.key(4))
    out = fit_aelle(
        model,
        spectra[train],
        a[train],
        optax.adam(optax.cosine_decay_schedule(1e-2, 2000)),
        n_steps=2000,
        key=jr.key(5),
        progress=False,
    )
    assert out.losses.shape == (2000,)
    assert set(out.aux) == {"reconstruction", "prediction"}
    m = out.model
    x = spectra[test]
    recon = np.asarray(m.decode(m.encode(x)))
    rel = np.linalg.norm(recon - x) / np.linalg.norm(x - x.mean(0))
    assert rel < 0.05
    # The standardization statistics are the training networks', untouched.
    np.testing.assert_allclose(m.spectrum_mean, spectra[train].mean(0), rtol=1e-12)
    assert float(m.floor) == spectra[train].min()


def test_loss_is_reconstruction_plus_weighted_prediction():
    # The loss written out in NumPy from the model's layers (an independent
    # forward pass): standardized MSE of the reconstruction + alpha * MSE of the
    # standardized prediction.
    spectra, a = _ramps(20, 8, seed=2)
    model = AeLLE(8, latent_size=3, key=jr.key(0))
    model = fit_aelle(
        model, spectra, a, optax.sgd(0.0), n_steps=0, key=jr.key(1), progress=False
    ).model  # sets the standardization, no training

    def layers(ls, h, last_act=False):
        for n, lin in enumerate(ls):
            h = h @ np.asarray(lin.weight).T + np.asarray(lin.bias)
            if n < len(ls) - 1 or last_act:
                h = np.tanh(h)
        return h

    z = (spectra - spectra.mean(0)) / np.sqrt(np.mean((spectra - spectra.mean(0)) ** 2))
    lat = layers(model.encoder, z)
    rec = np.mean((layers(model.decoder, lat) - z) ** 2)
    pred = layers((model.head,), lat)[:, 0]
    p = (a - a.mean()) / a.std()
    alpha = np.linspace(0.5, 2.0, 20)
    expected = rec + np.mean(alpha * (pred - p) ** 2)
    np.testing.assert_allclose(aelle_loss(model, spectra, a, alpha), expected, 1e-12)
    np.testing.assert_allclose(model.predict(spectra), pred * a.std() + a.mean(), 1e-12)


# --- (b) ROC against scikit-learn ---------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_roc_auc_and_curve_match_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = 200
    labels = rng.random(n) < 0.4
    scores = np.round(rng.normal(size=n) + labels, 1)  # rounding makes many ties
    assert np.unique(scores).size < n / 2
    np.testing.assert_allclose(
        roc_auc(scores, labels), sklearn_metrics.roc_auc_score(labels, scores), 1e-12
    )
    fpr, tpr, thr = roc_curve(scores, labels)
    ref = sklearn_metrics.roc_curve(labels, scores, drop_intermediate=False)
    for ours, theirs in zip((fpr, tpr, thr[1:]), (ref[0], ref[1], ref[2][1:])):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12)
    assert np.isinf(thr[0])
    # The trapezoid area under the curve is the Mann-Whitney AUC.
    np.testing.assert_allclose(np.trapezoid(tpr, fpr), roc_auc(scores, labels), 1e-12)


def test_roc_auc_jit_and_bad_labels():
    scores, labels = jnp.array([0.1, 0.4, 0.35, 0.8]), jnp.array([0, 0, 1, 1])
    assert jax.jit(roc_auc)(scores, labels) == 0.75  # sklearn's docstring example
    with pytest.raises(ValueError, match="only one class"):
        roc_auc(scores, jnp.ones(4))
    with pytest.raises(ValueError, match="binary"):
        roc_auc(scores, jnp.array([0, 1, 2, 1]))
    with pytest.raises(ValueError, match="finite"):
        roc_auc(scores.at[0].set(jnp.nan), labels)


# --- (c) logistic regression against scikit-learn ------------------------------------


def test_logistic_regression_matches_sklearn():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    n, offsets = 2000, np.array([0.0, 1.0, -2.0, 5.0])
    x = rng.normal(size=(n, 4)) * [1.0, 3.0, 0.2, 10.0] + offsets
    w_true = np.array([1.5, -0.5, 4.0, 0.1])
    b_true = -0.3 - offsets @ w_true
    y = rng.random(n) < 1 / (1 + np.exp(-(x @ w_true + b_true)))
    for l2 in (3.0, 0.1):
        ours = logistic_regression(x, y, l2=l2)
        ref = make_pipeline(
            StandardScaler(), LogisticRegression(C=1 / l2, tol=1e-12, max_iter=10_000)
        ).fit(x, y)
        clf = ref[-1]
        np.testing.assert_allclose(ours.weights, clf.coef_[0], atol=1e-4)
        np.testing.assert_allclose(ours.bias, clf.intercept_[0], atol=1e-4)
        np.testing.assert_allclose(
            ours.predict_proba(x), ref.predict_proba(x)[:, 1], atol=1e-6
        )
    # Weakly penalized (l2 = 0.1 on n = 2000): the raw-feature coefficients are
    # the generating ones within 4 standard errors (from the inverse Fisher
    # information at the fit).
    design = np.column_stack([x, np.ones(n)])
    p = np.asarray(ours.predict_proba(x))
    cov = np.linalg.inv(design.T @ (design * (p * (1 - p))[:, None]))
    se = np.sqrt(np.diag(cov))
    fitted = np.r_[np.asarray(ours.coef), float(ours.intercept)]
    assert np.all(np.abs(fitted - np.r_[w_true, b_true]) < 4 * se)
    with pytest.raises(ValueError, match="positive number"):
        logistic_regression(x, y, l2=0.0)
    with pytest.raises(ValueError, match="one per row"):
        logistic_regression(x, y[:-1])


# --- (d) the point of the method ----------------------------------------------------


def test_latent_classifier_sees_what_single_numbers_cannot(curved_study):
    spectra, performance, _, result = curved_study
    auc = {k: float(v) for k, v in result.auc.items()}
    assert list(auc)[0] == "AeLLE latent"
    # By construction the largest and mean exponents carry no information on
    # performance (chance: 0.5 +- ~0.06 with 80 test networks).
    assert abs(auc["largest exponent"] - 0.5) < 0.2
    assert abs(auc["mean exponent"] - 0.5) < 0.2
    assert auc["AeLLE latent"] > 0.9
    assert (
        auc["AeLLE latent"] > max(auc["largest exponent"], auc["mean exponent"]) + 0.3
    )
    # Every AUC is scikit-learn's on the same scores.
    for name, s in result.scores.items():
        ref = sklearn_metrics.roc_auc_score(np.asarray(result.labels), np.asarray(s))
        np.testing.assert_allclose(auc[name], ref, rtol=1e-12)


def test_baseline_features_by_hand():
    lam = np.array([[0.5, -0.2, -1.0, -np.inf], [-0.1, -0.3, -0.5, -0.9]])
    f = baseline_features(lam)
    # -inf is raised to the smallest finite exponent, -1.0.
    np.testing.assert_allclose(f["largest exponent"][:, 0], [0.5, -0.1])
    np.testing.assert_allclose(f["mean exponent"][:, 0], [-1.7 / 4, -1.8 / 4])
    # Kaplan-Yorke: j = 2, 2 + 0.3 / 1.0; a negative largest exponent gives 0.
    np.testing.assert_allclose(f["Kaplan-Yorke dimension"][:, 0], [2.3, 0.0])
    assert f["full spectrum"].shape == (2, 4)


def test_split_networks():
    train, val, test = split_networks(101, jr.key(0))
    assert (len(train), len(val), len(test)) == (61, 20, 20)
    together = np.sort(np.concatenate([train, val, test]))
    np.testing.assert_array_equal(together, np.arange(101))
    with pytest.raises(ValueError, match="summing to 1"):
        split_networks(10, jr.key(0), (0.5, 0.2, 0.2))
    with pytest.raises(ValueError, match="empty"):
        split_networks(2, jr.key(0), (0.9, 0.1, 0.0))


# --- (e) bad input ------------------------------------------------------------------


def test_interpolate_spectra():
    # A spectrum linear in its normalized index stays exactly linear (analytic).
    short = 1.0 - 2.0 * np.linspace(0, 1, 5)
    long = 1.0 - 2.0 * np.linspace(0, 1, 64)
    out = interpolate_spectra([short, long], 17)
    expected = np.tile(1.0 - 2.0 * np.linspace(0, 1, 17), (2, 1))
    np.testing.assert_allclose(out, expected, atol=1e-14)
    # Doubling 3 -> 5 inserts the midpoints (the reference code's scheme, away
    # from its extrapolated last value).
    np.testing.assert_allclose(
        interpolate_spectra([[0.3, 0.0, -1.0]], 5)[0], [0.3, 0.15, 0.0, -0.5, -1.0]
    )
    # A collapsed direction stays -inf where the interpolation leans on it.
    out = interpolate_spectra([[0.0, -1.0, -np.inf]], 5)[0]
    np.testing.assert_allclose(out[:3], [0.0, -0.5, -1.0])
    assert np.all(np.isneginf(out[3:]))


def test_bad_input_errors():
    spectra, a = _ramps(10, 6, seed=0)
    model = AeLLE(6, latent_size=2, key=jr.key(0))
    opt = optax.adam(1e-3)
    ragged = [np.zeros(6), np.zeros(4)]
    with pytest.raises(ValueError, match=r"different lengths.*interpolate_spectra"):
        fit_aelle(model, ragged, a[:2], opt, n_steps=1, key=jr.key(1))
    with pytest.raises(ValueError, match=r"shape \(10,\)"):
        fit_aelle(model, spectra, a[:9], opt, n_steps=1, key=jr.key(1))
    with pytest.raises(ValueError, match=r"NaN or \+inf.*network 3"):
        fit_aelle(model, _with(spectra, 3, np.nan), a, opt, n_steps=1, key=jr.key(1))
    with pytest.raises(ValueError, match=r"NaN or \+inf"):
        fit_aelle(model, _with(spectra, 0, np.inf), a, opt, n_steps=1, key=jr.key(1))
    with pytest.raises(ValueError, match="NaN or inf"):
        fit_aelle(model, spectra, np.r_[np.nan, a[1:]], opt, n_steps=1, key=jr.key(1))
    with pytest.raises(ValueError, match="interpolate"):
        fit_aelle(model, spectra[:, :5], a, opt, n_steps=1, key=jr.key(1))
    with pytest.raises(ValueError, match="alpha_schedule"):
        fit_aelle(model, spectra, a, opt, n_steps=1, key=jr.key(1), alpha_schedule=-1)
    with pytest.raises(ValueError, match="reads spectra of 6 exponents"):
        model.encode(np.zeros(5))


def _with(x, row, value):
    x = np.array(x, dtype=float)
    x[row, -1] = value
    return x


def test_minus_inf_exponents_are_clipped_to_the_floor():
    # A collapsed direction (-inf) is read as the floor: the smallest finite
    # exponent of the training spectra. Training on such spectra stays finite.
    spectra, a = _ramps(40, 6, seed=0)
    spectra[::4, -1] = -np.inf
    out = fit_aelle(
        AeLLE(6, latent_size=2, key=jr.key(0)),
        spectra,
        a,
        optax.adam(1e-3),
        n_steps=50,
        key=jr.key(1),
        progress=False,
    )
    m = out.model
    floor = spectra[np.isfinite(spectra)].min()
    assert float(m.floor) == floor
    assert np.all(np.isfinite(out.losses))
    clipped = np.where(np.isinf(spectra), floor, spectra)
    np.testing.assert_array_equal(m.encode(spectra), m.encode(clipped))


# --- (f) plots ----------------------------------------------------------------------


def test_plots(curved_study):
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection

    spectra, performance, out, result = curved_study
    ax = plot.spectra_by_performance(spectra, performance)
    lines = ax.collections[0]
    assert isinstance(lines, LineCollection) and len(lines.get_segments()) == 400
    np.testing.assert_allclose(lines.get_array(), np.sort(performance))
    assert len(ax.figure.axes) == 2  # the colour bar
    plt.close(ax.figure)

    from sklearn.decomposition import PCA

    latents = np.asarray(out.model.encode(spectra))
    ax = plot.latent_space(latents, performance)
    offsets = ax.collections[0].get_offsets()
    ref = PCA(2).fit(latents)
    np.testing.assert_allclose(
        np.abs(offsets), np.abs(ref.transform(latents)), atol=1e-8
    )
    assert f"{100 * ref.explained_variance_ratio_[0]:.0f}%" in ax.get_xlabel()
    plt.close(ax.figure)

    ax = plot.roc_curves(result)
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert len(texts) == 5 and texts[0].startswith("AeLLE latent")
    for name, s in result.scores.items():
        auc = sklearn_metrics.roc_auc_score(np.asarray(result.labels), np.asarray(s))
        assert f"{name} (AUC = {auc:.2f})" in texts
    plt.close(ax.figure)
    with pytest.raises(ValueError, match="interpolate"):
        plot.spectra_by_performance([np.zeros(3), np.zeros(4)], [0.0, 1.0])
