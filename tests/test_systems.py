"""Tests of the catalogue `dynjax.systems`.

Every expected value here is computed in plain NumPy/Python from the equations
as written in the cited papers (see each system's docstring), never by calling
the library: the vector field or map at points, the closed-form equilibria, the
literature's default parameters, derivatives with respect to parameters.
"""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

import dynjax
from dynjax import systems as S


def _rng(seed):
    return np.random.default_rng(seed)


_A4 = _rng(7).normal(size=(4, 4))
_OMEGA5 = _rng(8).normal(size=5)


# --------------------------------------------------------------------------
# Hand-written right-hand sides, straight from the cited equations.
# Each takes the parameter dict `p`, the time/step `t` and the state `x`.
# --------------------------------------------------------------------------


def _lorenz(p, t, x):
    X, Y, Z = x
    return [p["sigma"] * (Y - X), X * (p["rho"] - Z) - Y, X * Y - p["beta"] * Z]


def _rossler(p, t, x):
    X, Y, Z = x
    return [-Y - Z, X + p["a"] * Y, p["b"] + Z * (X - p["c"])]


def _chen(p, t, x):
    X, Y, Z = x
    a, b, c = p["a"], p["b"], p["c"]
    return [a * (Y - X), (c - a) * X - X * Z + c * Y, X * Y - b * Z]


def _chua(p, t, x):
    X, Y, Z = x
    phi = X**3 / 16.0 - X / 6.0
    return [p["alpha"] * (Y - phi), X - Y + Z, -p["beta"] * Y]


def _lorenz84(p, t, x):
    X, Y, Z = x
    a, b, F, G = p["a"], p["b"], p["F"], p["G"]
    return [
        -Y * Y - Z * Z - a * X + a * F,
        X * Y - b * X * Z - Y + G,
        b * X * Y + X * Z - Z,
    ]


def _thomas(p, t, x):
    X, Y, Z = x
    b = p["b"]
    return [math.sin(Y) - b * X, math.sin(Z) - b * Y, math.sin(X) - b * Z]


def _sprott_a(p, t, x):
    X, Y, Z = x
    return [Y, -X + Y * Z, 1 - Y * Y]


def _duffing(p, t, x):
    X, V = x
    acc = (
        -p["delta"] * V
        - p["alpha"] * X
        - p["beta"] * X**3
        + p["gamma"] * math.cos(p["omega"] * t)
    )
    return [V, acc]


def _vdp(p, t, x):
    X, Y = x
    return [Y, p["mu"] * (1 - X * X) * Y - X]


def _fhn(p, t, x):
    v, w = x
    return [v - v**3 / 3 - w + p["I"], p["epsilon"] * (v + p["a"] - p["b"] * w)]


def _brusselator(p, t, x):
    X, Y = x
    a, b = p["a"], p["b"]
    return [a - (b + 1) * X + X * X * Y, b * X - X * X * Y]


def _lotka_volterra(p, t, x):
    X, Y = x
    return [p["alpha"] * X - p["beta"] * X * Y, p["delta"] * X * Y - p["gamma"] * Y]


def _saddle_node(p, t, x):
    return [p["mu"] - x[0] ** 2, -x[1]]


def _transcritical(p, t, x):
    return [p["mu"] * x[0] - x[0] ** 2, -x[1]]


def _pitchfork(p, t, x):
    return [p["mu"] * x[0] - x[0] ** 3, -x[1]]


def _hopf(p, t, x):
    # Polar form r' = mu r - beta r^3, theta' = omega, converted by hand:
    # x' = r' cos - r theta' sin, y' = r' sin + r theta' cos.
    X, Y = x
    r = math.hypot(X, Y)
    th = math.atan2(Y, X)
    dr = p["mu"] * r - p["beta"] * r**3
    return [
        dr * math.cos(th) - r * p["omega"] * math.sin(th),
        dr * math.sin(th) + r * p["omega"] * math.cos(th),
    ]


def _henon_heiles_H(p, q):
    x, y, px, py = q
    lam = p["lam"]
    return (
        0.5 * (px * px + py * py) + 0.5 * (x * x + y * y) + lam * (x * x * y - y**3 / 3)
    )


def _henon_heiles(p, t, q):
    # Hamilton's equations with dH/dq by central differences of H itself.
    q = np.asarray(q, dtype=float)
    h = 1e-5
    grad = []
    for i in range(4):
        e = np.zeros(4)
        e[i] = h
        grad.append((_henon_heiles_H(p, q + e) - _henon_heiles_H(p, q - e)) / (2 * h))
    return [grad[2], grad[3], -grad[0], -grad[1]]


def _double_pendulum(p, t, x):
    # Euler-Lagrange equations of L = T - V with
    # T = (m1+m2) l1^2 w1^2 / 2 + m2 l2^2 w2^2 / 2 + m2 l1 l2 w1 w2 cos(th1-th2),
    # V = -(m1+m2) g l1 cos th1 - m2 g l2 cos th2, solved as M(th) w' = rhs.
    th1, th2, w1, w2 = x
    m1, m2, l1, l2, g = p["m1"], p["m2"], p["l1"], p["l2"], p["g"]
    c, s = math.cos(th1 - th2), math.sin(th1 - th2)
    M = np.array(
        [[(m1 + m2) * l1**2, m2 * l1 * l2 * c], [m2 * l1 * l2 * c, m2 * l2**2]]
    )
    rhs = np.array(
        [
            -m2 * l1 * l2 * w2**2 * s - (m1 + m2) * g * l1 * math.sin(th1),
            m2 * l1 * l2 * w1**2 * s - m2 * g * l2 * math.sin(th2),
        ]
    )
    acc = np.linalg.solve(M, rhs)
    return [w1, w2, acc[0], acc[1]]


def _lorenz96(p, t, x):
    N = len(x)
    return [
        (x[(i + 1) % N] - x[(i - 2) % N]) * x[(i - 1) % N] - x[i] + p["F"]
        for i in range(N)
    ]


def _kuramoto(p, t, x):
    N = len(x)
    return [
        p["omega"][i] + p["K"] / N * sum(math.sin(x[j] - x[i]) for j in range(N))
        for i in range(N)
    ]


def _linear(p, t, x):
    return np.asarray(p["A"]) @ np.asarray(x)


def _henon(p, n, x):
    X, Y = x
    return [1 - p["a"] * X * X + Y, p["b"] * X]


def _logistic(p, n, x):
    return [p["r"] * x[0] * (1 - x[0])]


def _tent(p, n, x):
    X = x[0]
    return [p["mu"] * X if X < 0.5 else p["mu"] * (1 - X)]


def _standard(p, n, x):
    th, P = x
    P1 = P + p["K"] * math.sin(th)
    return [(th + P1) % (2 * math.pi), P1 % (2 * math.pi)]


def _ikeda(p, n, x):
    # Complex form z' = a + u z exp(i tau), tau = k - p / (1 + |z|^2).
    z = complex(x[0], x[1])
    tau = p["k"] - p["p"] / (1 + abs(z) ** 2)
    z1 = p["a"] + p["u"] * z * complex(math.cos(tau), math.sin(tau))
    return [z1.real, z1.imag]


def _cat(p, n, x):
    return list(np.mod(np.array([[2, 1], [1, 1]]) @ np.asarray(x), 1.0))


def _circle(p, n, x):
    th = x[0]
    return [
        (th + p["Omega"] - p["K"] / (2 * math.pi) * math.sin(2 * math.pi * th)) % 1.0
    ]


# --------------------------------------------------------------------------
# The catalogue table: class, literature defaults, hand right-hand side, d.
# `make` builds the system from a parameter dict (None: the class's defaults).
# --------------------------------------------------------------------------


class Case:
    def __init__(self, name, defaults, hand, d, make=None, kind="flow", point=None):
        self.name = name
        self.cls = getattr(S, name)
        self.defaults = defaults
        self.hand = hand
        self.d = d
        self.make = make or (lambda p: self.cls() if p is None else self.cls(**p))
        self.kind = kind
        self.point = point  # sampler for evaluation points, default U(-1.5, 1.5)

    def __repr__(self):
        return self.name


def _unit(rng, d):
    return rng.uniform(0.05, 0.95, size=d)


_RRN_KEY = jax.random.key(3)

CASES = [
    Case("Lorenz", dict(sigma=10.0, rho=28.0, beta=8 / 3), _lorenz, 3),
    Case("Rossler", dict(a=0.2, b=0.2, c=5.7), _rossler, 3),
    Case("Chen", dict(a=35.0, b=3.0, c=28.0), _chen, 3),
    Case("Chua", dict(alpha=10.0, beta=16.0), _chua, 3),
    Case("Lorenz84", dict(a=0.25, b=4.0, F=8.0, G=1.0), _lorenz84, 3),
    Case("Thomas", dict(b=0.208186), _thomas, 3),
    Case("SprottA", dict(), _sprott_a, 3),
    Case(
        "Duffing",
        dict(delta=0.05, alpha=0.0, beta=1.0, gamma=7.5, omega=1.0),
        _duffing,
        2,
    ),
    Case("VanDerPol", dict(mu=1.0), _vdp, 2),
    Case("FitzHughNagumo", dict(a=0.7, b=0.8, epsilon=0.08, I=0.5), _fhn, 2),
    Case("Brusselator", dict(a=1.0, b=3.0), _brusselator, 2),
    Case(
        "LotkaVolterra",
        dict(alpha=1.0, beta=1.0, gamma=1.0, delta=1.0),
        _lotka_volterra,
        2,
    ),
    Case("SaddleNodeNormalForm", dict(mu=1.0), _saddle_node, 2),
    Case("TranscriticalNormalForm", dict(mu=1.0), _transcritical, 2),
    Case("PitchforkNormalForm", dict(mu=1.0), _pitchfork, 2),
    Case("HopfNormalForm", dict(mu=1.0, omega=1.0, beta=1.0), _hopf, 2),
    Case("HenonHeiles", dict(lam=1.0), _henon_heiles, 4),
    Case(
        "DoublePendulum",
        dict(m1=1.0, m2=1.0, l1=1.0, l2=1.0, g=9.81),
        _double_pendulum,
        4,
    ),
    Case(
        "Lorenz96",
        dict(F=8.0),
        _lorenz96,
        7,
        make=lambda p: S.Lorenz96(N=7) if p is None else S.Lorenz96(N=7, **p),
    ),
    Case(
        "Kuramoto",
        dict(omega=_OMEGA5, K=1.0),
        _kuramoto,
        5,
        make=lambda p: S.Kuramoto(_OMEGA5) if p is None else S.Kuramoto(**p),
    ),
    Case(
        "Linear",
        dict(A=_A4),
        _linear,
        4,
        make=lambda p: S.Linear(_A4 if p is None else p["A"]),
    ),
    Case("Henon", dict(a=1.4, b=0.3), _henon, 2, kind="map"),
    Case("Logistic", dict(r=4.0), _logistic, 1, kind="map", point=_unit),
    Case("Tent", dict(mu=2.0), _tent, 1, kind="map", point=_unit),
    Case("StandardMap", dict(K=0.971635), _standard, 2, kind="map"),
    Case("Ikeda", dict(u=0.9, a=1.0, k=0.4, p=6.0), _ikeda, 2, kind="map"),
    Case("CatMap", dict(), _cat, 2, kind="map", point=_unit),
    Case(
        "CircleMap", dict(K=1.0, Omega=0.606661063), _circle, 1, kind="map", point=_unit
    ),
    Case(
        "LinearMap",
        dict(A=_A4),
        _linear,
        4,
        make=lambda p: S.LinearMap(_A4 if p is None else p["A"]),
        kind="map",
    ),
]
IDS = [c.name for c in CASES]


def _evaluate(system, t, x):
    x = jnp.asarray(x)
    if isinstance(system, dynjax.AbstractFlow):
        return np.asarray(system.vector_field(t, x))
    return np.asarray(system.step(0, x))


def _points(case, seed):
    rng = _rng(seed)
    sample = case.point or (lambda r, d: r.uniform(-1.5, 1.5, size=d))
    return [sample(rng, case.d) for _ in range(2)]


def _perturbed(defaults):
    return {k: np.asarray(v) * 1.1 + 0.05 for k, v in defaults.items()}


def test_catalogue_is_complete():
    public = {
        n
        for n, v in vars(S).items()
        if isinstance(v, type) and issubclass(v, dynjax.AbstractSystem)
    }
    # Every public system is covered by this file (RandomRateNetwork separately).
    assert public == set(IDS) | {"RandomRateNetwork"}
    assert len(public) >= 24


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_defaults_are_the_literature_values(case):
    system = case.make(None)
    for name, value in case.defaults.items():
        np.testing.assert_allclose(np.asarray(getattr(system, name)), value, rtol=1e-12)
    assert system.d == case.d
    x0 = np.asarray(system.default_x0())
    assert x0.shape == (case.d,)
    assert np.all(np.isfinite(x0))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_rhs_matches_hand_formula_at_defaults(case):
    system = case.make(None)
    for x in _points(case, 11):
        expected = case.hand(case.defaults, 0.7, list(x))
        np.testing.assert_allclose(
            _evaluate(system, 0.7, x), np.asarray(expected, float), rtol=1e-9, atol=1e-9
        )


@pytest.mark.parametrize(
    "case", [c for c in CASES if c.defaults], ids=[c.name for c in CASES if c.defaults]
)
def test_nondefault_parameters_are_honoured(case):
    p = _perturbed(case.defaults)
    system = case.make(p)
    for x in _points(case, 12):
        expected = case.hand(p, 1.3, list(x))
        np.testing.assert_allclose(
            _evaluate(system, 1.3, x), np.asarray(expected, float), rtol=1e-9, atol=1e-9
        )


def test_tent_both_branches_and_default_x0_logistic():
    # The uniform points above may miss a branch; check both explicitly.
    tent = S.Tent(mu=1.9)
    np.testing.assert_allclose(tent.step(0, jnp.array([0.3])), [1.9 * 0.3])
    np.testing.assert_allclose(tent.step(0, jnp.array([0.8])), [1.9 * 0.2])


def test_standard_map_unwrapped_is_the_lift():
    m = S.StandardMap(K=1.2, wrap=False)
    th, p = 5.0, 7.0
    p1 = p + 1.2 * math.sin(th)
    np.testing.assert_allclose(m.step(0, jnp.array([th, p])), [th + p1, p1], rtol=1e-12)
    c = S.CircleMap(wrap=False)
    th = 3.7
    np.testing.assert_allclose(
        c.step(0, jnp.array([th])),
        [th + 0.606661063 - math.sin(2 * math.pi * th) / (2 * math.pi)],
        rtol=1e-12,
    )


# --------------------------------------------------------------------------
# Equilibria / fixed points: closed forms against hand formulas, and f(x*) = 0.
# --------------------------------------------------------------------------


def _eq_lorenz(p):
    c = math.sqrt(p["beta"] * (p["rho"] - 1))
    return [[0, 0, 0], [c, c, p["rho"] - 1], [-c, -c, p["rho"] - 1]]


def _eq_rossler(p):
    # y solves a y^2 + c y + b = 0 (from x = -a y, z = -y); x = -a y, z = -y.
    ys = np.roots([p["a"], p["c"], p["b"]])
    return [[-p["a"] * y, y, -y] for y in ys.real]


def _eq_chen(p):
    z = 2 * p["c"] - p["a"]
    q = math.sqrt(p["b"] * z)
    return [[0, 0, 0], [q, q, z], [-q, -q, z]]


def _eq_chua(p):
    xs = np.roots([1 / 16, 0, -1 / 6, 0]).real
    return [[x, 0, -x] for x in xs]


def _eq_hh(p):
    lam = p["lam"]
    return [
        [0, 0, 0, 0],
        [0, 1 / lam, 0, 0],
        [math.sqrt(3) / (2 * lam), -1 / (2 * lam), 0, 0],
        [-math.sqrt(3) / (2 * lam), -1 / (2 * lam), 0, 0],
    ]


def _eq_henon(p):
    # x = 1 - a x^2 + b x.
    xs = np.roots([p["a"], 1 - p["b"], -1]).real
    return [[x, p["b"] * x] for x in xs]


EQUILIBRIA = {
    "Lorenz": _eq_lorenz,
    "Rossler": _eq_rossler,
    "Chen": _eq_chen,
    "Chua": _eq_chua,
    "VanDerPol": lambda p: [[0, 0]],
    "Brusselator": lambda p: [[p["a"], p["b"] / p["a"]]],
    "LotkaVolterra": lambda p: [
        [0, 0],
        [p["gamma"] / p["delta"], p["alpha"] / p["beta"]],
    ],
    "SaddleNodeNormalForm": lambda p: [
        [math.sqrt(p["mu"]), 0],
        [-math.sqrt(p["mu"]), 0],
    ],
    "TranscriticalNormalForm": lambda p: [[0, 0], [p["mu"], 0]],
    "PitchforkNormalForm": lambda p: [
        [0, 0],
        [math.sqrt(p["mu"]), 0],
        [-math.sqrt(p["mu"]), 0],
    ],
    "HopfNormalForm": lambda p: [[0, 0]],
    "HenonHeiles": _eq_hh,
    "DoublePendulum": lambda p: [
        [a, b, 0, 0] for a in (0, math.pi) for b in (0, math.pi)
    ],
    "Lorenz96": lambda p: [[p["F"]] * 7],
    "Linear": lambda p: [[0] * 4],
    "Henon": _eq_henon,
    "Logistic": lambda p: [[0], [1 - 1 / p["r"]]],
    "Tent": lambda p: [[0], [p["mu"] / (1 + p["mu"])]],
    "StandardMap": lambda p: [[0, 0], [math.pi, 0]],
    "CatMap": lambda p: [[0, 0]],
    "LinearMap": lambda p: [[0] * 4],
}
EQ_CASES = [c for c in CASES if c.name in EQUILIBRIA]
PERIOD = {"StandardMap": 2 * math.pi, "CatMap": 1.0}


def _sorted_rows(a):
    a = np.round(np.asarray(a, float), 10) + 0.0
    return a[np.lexsort(a.T[::-1])]


@pytest.mark.parametrize("case", EQ_CASES, ids=[c.name for c in EQ_CASES])
@pytest.mark.parametrize("perturb", [False, True], ids=["default", "perturbed"])
def test_equilibria(case, perturb):
    p = _perturbed(case.defaults) if perturb else case.defaults
    p = {k: (float(v) if np.ndim(v) == 0 else np.asarray(v)) for k, v in p.items()}
    system = case.make(p if perturb else None)
    if case.kind == "flow":
        eqs = np.asarray(system.equilibria())
    else:
        eqs = np.asarray(system.fixed_points())
    expected = np.asarray(EQUILIBRIA[case.name](p), float)
    assert eqs.shape == expected.shape
    np.testing.assert_allclose(_sorted_rows(eqs), _sorted_rows(expected), atol=1e-9)
    for x in eqs:
        if case.kind == "flow":
            np.testing.assert_allclose(_evaluate(system, 0.0, x), 0.0, atol=1e-9)
        else:
            diff = _evaluate(system, 0, x) - x
            if case.name in PERIOD:
                P = PERIOD[case.name]
                diff = (diff + P / 2) % P - P / 2
            np.testing.assert_allclose(diff, 0.0, atol=1e-9)


def test_hopf_limit_cycle():
    mu, beta, omega = 0.7, 1.9, 2.3
    hopf = S.HopfNormalForm(mu=mu, omega=omega, beta=beta)
    r = math.sqrt(mu / beta)
    np.testing.assert_allclose(hopf.limit_cycle_radius(), r, rtol=1e-12)
    # On the circle of radius sqrt(mu/beta) the field is tangent with speed omega r.
    for th in (0.3, 2.0, 4.4):
        x = jnp.array([r * math.cos(th), r * math.sin(th)])
        f = np.asarray(hopf.vector_field(0.0, x))
        np.testing.assert_allclose(np.dot(f, np.asarray(x)), 0.0, atol=1e-12)
        np.testing.assert_allclose(np.linalg.norm(f), omega * r, rtol=1e-12)


@pytest.mark.parametrize(
    "system, method",
    [
        (S.Lorenz(rho=0.5), "equilibria"),
        (S.Rossler(c=0.1), "equilibria"),
        (S.Chen(c=10.0), "equilibria"),
        (S.Brusselator(a=0.0), "equilibria"),
        (S.LotkaVolterra(beta=0.0), "equilibria"),
        (S.SaddleNodeNormalForm(mu=-1.0), "equilibria"),
        (S.PitchforkNormalForm(mu=-1.0), "equilibria"),
        (S.HopfNormalForm(mu=-1.0), "limit_cycle_radius"),
        (S.HenonHeiles(lam=0.0), "equilibria"),
        (S.Henon(a=0.0), "fixed_points"),
        (S.Logistic(r=0.0), "fixed_points"),
    ],
    ids=lambda v: v if isinstance(v, str) else type(v).__name__,
)
def test_missing_closed_forms_raise_not_nan(system, method):
    with pytest.raises(eqx.EquinoxRuntimeError):
        getattr(system, method)()


# --------------------------------------------------------------------------
# Conserved quantities (first integrals): grad(E) . f = 0.
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "system, integral",
    [
        (S.HenonHeiles(lam=0.8), "energy"),
        (S.DoublePendulum(m1=1.3, m2=0.7, l1=0.9, l2=1.4, g=9.81), "energy"),
        (S.LotkaVolterra(alpha=1.2, beta=0.6, gamma=0.9, delta=1.7), "conserved"),
    ],
    ids=["HenonHeiles", "DoublePendulum", "LotkaVolterra"],
)
def test_first_integrals_are_conserved(system, integral):
    fn = getattr(system, integral)
    for x in _rng(5).uniform(0.2, 1.5, size=(3, system.d)):
        x = jnp.asarray(x)
        rate = jnp.dot(jax.grad(fn)(x), system.vector_field(0.0, x))
        assert abs(float(rate)) < 1e-10 * (1 + float(jnp.linalg.norm(jax.grad(fn)(x))))


def test_henon_heiles_energy_matches_hand_hamiltonian():
    x = _rng(6).uniform(-0.5, 0.5, size=4)
    sys_ = S.HenonHeiles(lam=0.8)
    np.testing.assert_allclose(
        sys_.energy(jnp.asarray(x)), _henon_heiles_H({"lam": 0.8}, x)
    )


def test_kuramoto_order_parameter():
    theta = _rng(9).uniform(0, 2 * math.pi, size=6)
    k = S.Kuramoto(np.zeros(6), K=2.0)
    np.testing.assert_allclose(
        k.order_parameter(jnp.asarray(theta)), abs(np.mean(np.exp(1j * theta)))
    )
    np.testing.assert_allclose(k.order_parameter(jnp.zeros(6)), 1.0)


# --------------------------------------------------------------------------
# Random rate network.
# --------------------------------------------------------------------------


def test_random_rate_network_statistics_and_determinism():
    N, g = 400, 2.0
    net = S.RandomRateNetwork(N=N, g=g, key=jax.random.key(0))
    J = np.asarray(net.J)
    assert net.d == N and J.shape == (N, N)
    M = N * N
    var = g**2 / N
    # Sample mean ~ N(0, var / M); sample variance has relative std sqrt(2 / M).
    assert abs(J.mean()) < 5 * math.sqrt(var / M)
    assert abs(J.var() / var - 1) < 5 * math.sqrt(2 / M)
    np.testing.assert_allclose(float(net.g), g)
    again = S.RandomRateNetwork(N=N, g=g, key=jax.random.key(0))
    np.testing.assert_array_equal(np.asarray(again.J), J)
    other = S.RandomRateNetwork(N=N, g=g, key=jax.random.key(1))
    assert not np.allclose(np.asarray(other.J), J)


def test_random_rate_network_vector_field_and_equilibrium():
    net = S.RandomRateNetwork(N=9, g=1.5, key=_RRN_KEY)
    J = np.asarray(net.J)
    h = _rng(4).normal(size=9)
    np.testing.assert_allclose(
        net.vector_field(0.0, jnp.asarray(h)), -h + J @ np.tanh(h), rtol=1e-12
    )
    np.testing.assert_allclose(net.equilibria(), np.zeros((1, 9)))
    np.testing.assert_allclose(net.vector_field(0.0, net.equilibria()[0]), 0.0)
    x0 = np.asarray(net.default_x0())
    np.testing.assert_allclose(x0, 0.1 * np.sin(np.arange(1, 10)))
    # Gain scales J: same key, twice the gain, twice the couplings.
    net2 = S.RandomRateNetwork(N=9, g=3.0, key=_RRN_KEY)
    np.testing.assert_allclose(np.asarray(net2.J), 2 * J, rtol=1e-12)


# --------------------------------------------------------------------------
# Linear systems: exact solutions against SciPy.
# --------------------------------------------------------------------------


def test_linear_exact_matches_scipy_expm():
    lin = S.Linear(_A4)
    x0 = _rng(1).normal(size=4)
    for t in (0.3, 1.7):
        expected = scipy.linalg.expm(t * _A4) @ x0
        np.testing.assert_allclose(lin.exact(t, jnp.asarray(x0)), expected, rtol=1e-10)


def test_linear_map_exact_matches_matrix_power():
    lm = S.LinearMap(_A4 / 3)
    x0 = _rng(2).normal(size=4)
    np.testing.assert_allclose(
        lm.exact(5, jnp.asarray(x0)),
        np.linalg.matrix_power(_A4 / 3, 5) @ x0,
        rtol=1e-10,
    )


# --------------------------------------------------------------------------
# Parameters are differentiable leaves.
# --------------------------------------------------------------------------


def test_grad_wrt_parameters_matches_hand_derivatives():
    x = jnp.array([0.7, -1.2, 3.1])
    # d/d rho of (x (rho - z) - y) = x.
    g = jax.grad(lambda s: s.vector_field(0.0, x)[1])(S.Lorenz())
    np.testing.assert_allclose(g.rho, 0.7)
    np.testing.assert_allclose(g.sigma, 0.0)
    # d/d beta of (x y - beta z) = -z.
    g = jax.grad(lambda s: s.vector_field(0.0, x)[2])(S.Lorenz())
    np.testing.assert_allclose(g.beta, -3.1)
    # Henon: d/d a of (1 - a x^2 + y) = -x^2.
    g = jax.grad(lambda s: s.step(0, x[:2])[0])(S.Henon())
    np.testing.assert_allclose(g.a, -0.49)
    # Hopf: d/d beta of (mu x - omega y - beta x r^2) = -x r^2.
    g = jax.grad(lambda s: s.vector_field(0.0, x[:2])[0])(S.HopfNormalForm())
    np.testing.assert_allclose(g.beta, -0.7 * (0.49 + 1.44))
    # Random network: d/dJ of f_0 = -h_0 + sum_j J_0j tanh(h_j) is e_0 tanh(h)^T.
    net = S.RandomRateNetwork(N=3, key=_RRN_KEY)
    g = jax.grad(lambda s: s.vector_field(0.0, x)[0])(net)
    expected = np.zeros((3, 3))
    expected[0] = np.tanh(np.asarray(x))
    np.testing.assert_allclose(g.J, expected, rtol=1e-12)


def test_grad_double_pendulum_gravity_against_finite_differences():
    x = [0.4, -1.1, 0.3, 0.8]
    p = dict(m1=1.0, m2=1.0, l1=1.0, l2=1.0, g=9.81)
    g = jax.grad(lambda s: s.vector_field(0.0, jnp.asarray(x))[2])(S.DoublePendulum())
    h = 1e-5
    fd = (
        _double_pendulum({**p, "g": 9.81 + h}, 0, x)[2]
        - _double_pendulum({**p, "g": 9.81 - h}, 0, x)[2]
    ) / (2 * h)
    np.testing.assert_allclose(g.g, fd, rtol=1e-7)


def test_vmap_over_parameters():
    rhos = jnp.array([10.0, 28.0, 99.0])
    x = jnp.array([1.0, 2.0, 3.0])
    batch = eqx.filter_vmap(lambda r: S.Lorenz(rho=r).vector_field(0.0, x))(rhos)
    expected = [_lorenz(dict(sigma=10.0, rho=float(r), beta=8 / 3), 0, x) for r in rhos]
    np.testing.assert_allclose(batch, np.asarray(expected, float), rtol=1e-12)


def test_lorenz96_jit_and_other_sizes():
    for N in (4, 40):
        l96 = S.Lorenz96(N=N, F=5.0)
        assert l96.d == N
        x = _rng(N).normal(size=N)
        out = eqx.filter_jit(lambda s, y: s.vector_field(0.0, y))(l96, jnp.asarray(x))
        np.testing.assert_allclose(out, _lorenz96({"F": 5.0}, 0, list(x)), rtol=1e-12)
        np.testing.assert_allclose(l96.default_x0()[0], 5.01)


# --------------------------------------------------------------------------
# Bad constructions.
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: S.Linear(np.ones((2, 3))), "square matrix"),
        (lambda: S.Linear(np.ones(3)), "square matrix"),
        (lambda: S.LinearMap(np.ones((3, 2))), "square matrix"),
        (lambda: S.Lorenz96(N=3), "N"),
        (lambda: S.Lorenz96(N=10.0), "Python int"),
        (lambda: S.Kuramoto(np.ones((2, 2))), "1-D array"),
        (lambda: S.Kuramoto(np.array([])), "1-D array"),
        (lambda: S.RandomRateNetwork(N=0, key=_RRN_KEY), "N"),
    ],
    ids=[
        "linear-rect",
        "linear-1d",
        "linmap-rect",
        "l96-small",
        "l96-float",
        "kuramoto-2d",
        "kuramoto-empty",
        "rrn-zero",
    ],
)
def test_bad_constructions_raise(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_random_rate_network_needs_key():
    with pytest.raises(TypeError):
        S.RandomRateNetwork(N=5)


def test_integer_matrices_become_float_parameters():
    lin = S.Linear(np.array([[0, 1], [-1, 0]]))
    assert jnp.issubdtype(lin.A.dtype, jnp.floating)
    g = jax.grad(lambda s: s.vector_field(0.0, jnp.array([1.0, 2.0]))[0])(lin)
    np.testing.assert_allclose(g.A, [[1.0, 2.0], [0.0, 0.0]])
    assert jnp.issubdtype(S.Kuramoto(np.array([1, 2])).omega.dtype, jnp.floating)


# --------------------------------------------------------------------------
# Through `dynjax.trajectory`: analytic solutions of catalogue systems.
# --------------------------------------------------------------------------


def test_hopf_trajectory_matches_analytic_radius():
    # r' = mu r - beta r^3 has r(t)^2 = mu / (beta + (mu / r0^2 - beta) exp(-2 mu t)),
    # and theta(t) = theta0 + omega t.
    mu, omega, beta, r0 = 0.8, 1.7, 2.0, 0.1
    hopf = S.HopfNormalForm(mu=mu, omega=omega, beta=beta)
    ts = jnp.linspace(0.0, 6.0, 7)
    sol = dynjax.trajectory(hopf, jnp.array([r0, 0.0]), t1=6.0, ts=ts)
    t = np.asarray(ts)
    r = np.sqrt(mu / (beta + (mu / r0**2 - beta) * np.exp(-2 * mu * t)))
    expected = np.stack([r * np.cos(omega * t), r * np.sin(omega * t)], axis=1)
    np.testing.assert_allclose(sol.xs, expected, rtol=1e-6, atol=1e-8)


def test_henon_map_trajectory_follows_hand_iteration():
    sol = dynjax.trajectory(S.Henon(), jnp.array([0.1, 0.2]), n_steps=20)
    x = [0.1, 0.2]
    expected = [x]
    for _ in range(20):
        x = _henon(dict(a=1.4, b=0.3), 0, x)
        expected.append(x)
    np.testing.assert_allclose(sol.xs, np.asarray(expected), rtol=1e-10, atol=1e-12)


def test_chua_defaults_give_a_bounded_double_scroll():
    # The documented regime: the orbit from default_x0 stays bounded and keeps
    # switching between the two scrolls around (±sqrt(8/3), 0, ∓sqrt(8/3)).
    chua = S.Chua()
    sol = dynjax.trajectory(chua, chua.default_x0(), t1=200.0, n_save=2001)
    x = np.asarray(sol.xs[200:, 0])
    assert np.all(np.abs(np.asarray(sol.xs)) < 10)
    assert np.sum(np.diff(np.sign(x)) != 0) >= 10
