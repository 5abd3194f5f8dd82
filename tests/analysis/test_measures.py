"""Similarity measures against their defining properties and a textbook computation."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from harness.analysis.measures import SimilarityError, cca_fit, linear_cka, pwcca

TOL = 1e-6


def _data(n=2000, d=20, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)) @ rng.standard_normal((d, d))  # correlated features


def test_cca_is_one_for_identical_and_invertible_linear_maps():
    x = _data()
    rng = np.random.default_rng(1)
    a = rng.standard_normal((20, 20)) + 3 * np.eye(20)
    assert abs(pwcca(x, x) - 1) <= TOL
    assert abs(pwcca(x, x @ a + 5.0) - 1) <= TOL
    assert np.allclose(cca_fit(x, x @ a).rho.numpy(), 1.0, atol=TOL)


def test_cka_is_one_under_orthogonal_maps_and_isotropic_scaling():
    x = _data()
    q, _ = np.linalg.qr(np.random.default_rng(2).standard_normal((20, 20)))
    for debiased in (False, True):
        assert abs(linear_cka(x, x, debiased) - 1) <= TOL
        assert abs(linear_cka(x, 3.7 * x @ q + 1.0, debiased) - 1) <= TOL


def test_cka_of_independent_noise_is_near_zero_and_debiasing_helps():
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((300, 50)), rng.standard_normal((300, 50))
    biased, unbiased = linear_cka(x, y), linear_cka(x, y, debiased=True)
    assert biased < 0.25
    assert abs(unbiased) < biased and abs(unbiased) < 0.03


def test_debiased_cka_matches_the_gram_matrix_formula():
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((60, 7)), rng.standard_normal((60, 5)) + rng.standard_normal((60, 1))

    def hsic_u(k, l):
        n = k.shape[0]
        k, l = k.copy(), l.copy()
        np.fill_diagonal(k, 0)
        np.fill_diagonal(l, 0)
        one = np.ones(n)
        return (np.trace(k @ l) + one @ k @ one * (one @ l @ one) / ((n - 1) * (n - 2))
                - 2 / (n - 2) * one @ k @ l @ one) / (n * (n - 3))

    xc, yc = x - x.mean(0), y - y.mean(0)
    k, l = xc @ xc.T, yc @ yc.T
    ref = hsic_u(k, l) / np.sqrt(hsic_u(k, k) * hsic_u(l, l))
    assert abs(linear_cka(x, y, debiased=True) - ref) <= 1e-9


def _textbook_cca(x, y, ridge_x=0.0, ridge_y=0.0):
    """Canonical correlations and directions from the generalised eigenproblem
    Cxy Cyy^-1 Cyx a = rho^2 Cxx a (and the same for y), with absolute ridges added."""
    n = len(x)
    xc, yc = x - x.mean(0), y - y.mean(0)
    cxx = xc.T @ xc / (n - 1) + ridge_x * np.eye(x.shape[1])
    cyy = yc.T @ yc / (n - 1) + ridge_y * np.eye(y.shape[1])
    cxy = xc.T @ yc / (n - 1)
    k = min(x.shape[1], y.shape[1])
    vx, ax = scipy.linalg.eigh(cxy @ np.linalg.solve(cyy, cxy.T), cxx)
    vy, ay = scipy.linalg.eigh(cxy.T @ np.linalg.solve(cxx, cxy), cyy)
    ox, oy = np.argsort(vx)[::-1][:k], np.argsort(vy)[::-1][:k]
    return np.sqrt(np.clip(vx[ox], 0, 1)), xc @ ax[:, ox], yc @ ay[:, oy]


def _textbook_pwcca(rho, variates, neurons):
    """Morcos et al.: alpha_i = sum_j |<h_i, z_j>| over the view's neurons z_j, h_i the
    orthonormalised canonical variates; PWCCA = sum_i alpha_i rho_i / sum_i alpha_i."""
    q, _ = np.linalg.qr(variates - variates.mean(0))
    alpha = np.abs(q.T @ (neurons - neurons.mean(0))).sum(1)
    return float((alpha / alpha.sum() * rho).sum())


def _correlated(n, d1, d2, shared, seed):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, shared))
    x = np.hstack([z, rng.standard_normal((n, d1 - shared))]) @ rng.standard_normal((d1, d1))
    y = np.hstack([z + 0.7 * rng.standard_normal((n, shared)), rng.standard_normal((n, d2 - shared))]) \
        @ rng.standard_normal((d2, d2))
    return x, y


def test_pwcca_matches_a_textbook_computation_weighted_by_the_smaller_view():
    x, y = _correlated(800, 9, 5, 3, seed=5)  # unequal dimensions: y has fewer neurons
    rho, _, vy = _textbook_cca(x, y)
    assert np.allclose(cca_fit(x, y).rho.numpy(), rho, atol=TOL)
    ref = _textbook_pwcca(rho, vy, y)
    assert abs(pwcca(x, y) - ref) <= TOL
    assert abs(pwcca(y, x) - ref) <= TOL  # symmetric: the weights follow the smaller view, not the argument order


def test_the_old_first_argument_weighting_differs_on_a_one_hot_property():
    """Regression: 128-dim features against a 49-class one-hot (last class dropped, as the
    analysis does). Weighting by the features (the old behaviour) gives another number."""
    rng = np.random.default_rng(11)
    n, classes = 6000, 49
    labels = rng.integers(0, classes, n)
    centroids = rng.standard_normal((classes, 16))
    x = np.hstack([centroids[labels] + 1.5 * rng.standard_normal((n, 16)), rng.standard_normal((n, 112))])
    x = x @ rng.standard_normal((128, 128))
    y = np.eye(classes)[labels][:, :-1]
    rho, vx, vy = _textbook_cca(x, y)
    published = _textbook_pwcca(rho, vy, y)
    old = _textbook_pwcca(rho, vx, x)
    assert abs(published - old) > 0.02  # the choice matters
    assert abs(pwcca(x, y) - published) <= 1e-5
    assert abs(pwcca(x, y, weights="x") - old) <= 1e-5


def test_the_reference_convention_is_an_absolute_ridge_per_view_and_drops_flat_dimensions():
    x, y = _correlated(600, 7, 6, 3, seed=8)
    xc, yc = x - x.mean(0), y - y.mean(0)
    mx = np.abs(xc.T @ xc / 599).max()
    my = np.abs(yc.T @ yc / 599).max()
    ex, ey = 1e-3, 2e-2  # separate epsilons per view, below every scaled variance here
    rho, _, _ = _textbook_cca(x, y, ex * mx, ey * my)
    fit = cca_fit(x, y, ex, ey, convention="reference")
    assert bool(fit.kept_x.all()) and bool(fit.kept_y.all())
    assert np.allclose(fit.rho.numpy(), rho, atol=TOL)
    relative = cca_fit(x, y, ex, ey, convention="relative")
    rho_rel, _, _ = _textbook_cca(x, y, ex * np.trace(xc.T @ xc / 599) / 7, ey * np.trace(yc.T @ yc / 599) / 6)
    assert np.allclose(relative.rho.numpy(), rho_rel, atol=TOL)
    # a near-constant neuron (scaled variance below epsilon) is dropped, not regularised
    flat = np.hstack([x, 1e-5 * np.random.default_rng(0).standard_normal((600, 1))])
    dropped = cca_fit(flat, y, 1e-6, 1e-6, convention="reference")
    assert dropped.kept_x.tolist() == [True] * 7 + [False]
    assert np.allclose(dropped.rho.numpy(), cca_fit(x, y, 1e-6, 1e-6).rho.numpy(), atol=TOL)


def test_all_epsilons_from_one_factorisation_equal_separate_fits():
    from harness.analysis.measures import CcaProblem, pwcca_score

    x, y = _correlated(700, 12, 8, 4, seed=9)
    problem = CcaProblem(x[:500], y[:500])
    for ex, ey in [(0.0, 0.0), (1e-6, 1e-3), (1e-2, 1e-5), (1e-1, 1e-1)]:
        shared = problem.fit(ex, ey)
        alone = cca_fit(x[:500], y[:500], ex, ey)
        assert np.allclose(shared.rho.numpy(), alone.rho.numpy(), atol=1e-10)
        assert abs(pwcca_score(shared, x[500:], y[500:]) - pwcca_score(alone, x[500:], y[500:])) <= 1e-10


def test_svcca_matches_a_direct_computation():
    from harness.analysis.measures import svcca

    x, y = _correlated(900, 10, 7, 3, seed=10)
    x[:, -1] *= 1e-3  # a direction carrying almost no variance: cut by the 99% rule

    def reduce(a):
        ac = a - a.mean(0)
        _, s, vt = np.linalg.svd(ac, full_matrices=False)
        r = int(np.searchsorted(np.cumsum(s ** 2) / np.sum(s ** 2), 0.99) + 1)
        return ac @ vt[:r].T

    rx, ry = reduce(x), reduce(y)
    assert rx.shape[1] < 10
    rho, _, _ = _textbook_cca(rx, ry)
    assert abs(svcca(x, y) - rho.mean()) <= TOL


def test_too_few_samples_is_refused():
    rng = np.random.default_rng(6)
    with pytest.raises(SimilarityError, match="more samples than dimensions"):
        pwcca(rng.standard_normal((30, 40)), rng.standard_normal((30, 5)))
    with pytest.raises(SimilarityError, match="at least 4"):
        linear_cka(rng.standard_normal((3, 2)), rng.standard_normal((3, 2)))
    with pytest.raises(SimilarityError, match="singular"):
        x = rng.standard_normal((100, 5))
        pwcca(np.hstack([x, x[:, :1]]), rng.standard_normal((100, 3)))


def test_held_out_samples_must_exceed_canonical_directions():
    from harness.analysis.measures import pwcca_score

    rng = np.random.default_rng(7)
    x, y = rng.standard_normal((400, 30)), rng.standard_normal((400, 20))
    fit = cca_fit(x, y, 1e-3)
    with pytest.raises(SimilarityError, match="held-out samples"):
        pwcca_score(fit, x[:15], y[:15])


def test_streaming_cka_equals_the_full_computation_and_minibatch_cka_its_definition():
    from harness.analysis.measures import StreamingCKA, minibatch_cka

    rng = np.random.default_rng(12)
    x = rng.standard_normal((300, 9)) + 20.0  # a large mean: the sums must not lose precision
    y = np.hstack([x[:, :3] @ rng.standard_normal((3, 4)), rng.standard_normal((300, 2))]) - 7.0
    acc = StreamingCKA()
    for start in range(0, 300, 37):
        acc.update(x[start:start + 37], y[start:start + 37])
    for debiased in (False, True):
        assert abs(acc.value(debiased) - linear_cka(x, y, debiased)) <= 1e-10

    def hsic_u(k, l):
        n = k.shape[0]
        k, l = k.copy(), l.copy()
        np.fill_diagonal(k, 0)
        np.fill_diagonal(l, 0)
        one = np.ones(n)
        return (np.trace(k @ l) + one @ k @ one * (one @ l @ one) / ((n - 1) * (n - 2))
                - 2 / (n - 2) * one @ k @ l @ one) / (n * (n - 3))

    batches = [(x[i:i + 60], y[i:i + 60]) for i in range(0, 300, 60)]
    num = sum(hsic_u(a @ a.T, b @ b.T) for a, b in batches)
    den = np.sqrt(sum(hsic_u(a @ a.T, a @ a.T) for a, _ in batches) * sum(hsic_u(b @ b.T, b @ b.T) for _, b in batches))
    assert abs(minibatch_cka(batches) - num / den) <= 1e-8  # Gram sums of uncentred data: float64 rounding
    assert abs(minibatch_cka([(x, y)]) - linear_cka(x, y, debiased=True)) <= 1e-9


def test_neuron_measures_match_numpy_and_stream_exactly():
    from harness.analysis.measures import NeuronStats, maxcorr, neuron_similarity

    rng = np.random.default_rng(13)
    x = rng.standard_normal((500, 6))
    y = np.hstack([x[:, :2] * [2.0, -1.0] + 0.1 * rng.standard_normal((500, 2)), rng.standard_normal((500, 3))])
    corr = np.corrcoef(x.T, y.T)[:6, 6:]
    best = np.abs(corr).max(1)
    got = maxcorr(x, y)
    assert np.allclose(got.per_neuron_max, best, atol=1e-10)
    assert abs(got.maxcorr - best.mean()) <= 1e-10 and abs(got.mincorr - best.min()) <= 1e-10
    # LinReg: share of each of x's neurons' variance explained by least squares from y
    yc = np.hstack([y - y.mean(0), np.ones((500, 1))])
    r2 = []
    for j in range(6):
        coef, *_ = np.linalg.lstsq(yc, x[:, j], rcond=None)
        resid = x[:, j] - yc @ coef
        r2.append(1 - resid.var() / x[:, j].var())
    assert np.allclose(got.per_neuron_r2, r2, atol=1e-5)
    stream = NeuronStats()
    for i in range(0, 500, 64):
        stream.update(x[i:i + 64], y[i:i + 64])
    streamed, reverse = neuron_similarity(stream)
    assert np.allclose(streamed.per_neuron_max, best, atol=1e-10)
    assert np.allclose(reverse.per_neuron_max, np.abs(corr).max(0), atol=1e-10)
    assert abs(got.maxcorr - streamed.maxcorr) <= 1e-10


def test_attention_measures_match_their_definitions():
    from scipy.spatial.distance import jensenshannon

    from harness.analysis.measures import (
        attention_frobenius,
        attention_js_similarity,
        attention_pearson,
        best_match,
    )

    rng = np.random.default_rng(14)
    a = rng.random((12, 12)) ** 3
    b = rng.random((12, 12)) ** 3
    a /= a.sum(1, keepdims=True)
    b /= b.sum(1, keepdims=True)
    js = np.mean([jensenshannon(p, q, base=2) ** 2 for p, q in zip(a, b)])
    assert abs(attention_js_similarity(a, b) - (1 - js)) <= 1e-10
    assert abs(attention_js_similarity(a, a) - 1) <= 1e-12
    assert abs(attention_pearson(a, b) - np.corrcoef(a.ravel(), b.ravel())[0, 1]) <= 1e-10
    assert abs(attention_frobenius(a, b) - np.linalg.norm(a - b)) <= 1e-10
    assert best_match(np.array([[0.1, 0.9], [0.5, 0.2]]), True).tolist() == [0.9, 0.5]
    assert best_match(np.array([[0.1, 0.9], [0.5, 0.2]]), False).tolist() == [0.1, 0.2]
