"""TopK SAE: numpy encode/decode against a hand-written forward, the metrics against plain
formulas, and recovery of known sparse generators."""

import numpy as np
import pytest

from backend.analysis import features as F


def _random_sae(d_in=12, d_sae=40, k=5, seed=0) -> F.SAE:
    rng = np.random.default_rng(seed)
    W_dec = rng.normal(size=(d_sae, d_in)).astype(np.float32)
    W_dec /= np.linalg.norm(W_dec, axis=1, keepdims=True)
    return F.SAE(
        W_enc=rng.normal(size=(d_in, d_sae)).astype(np.float32),
        b_enc=rng.normal(size=d_sae).astype(np.float32),
        W_dec=W_dec,
        b_dec=rng.normal(size=d_in).astype(np.float32),
        k=k,
    )


def _forward_by_hand(sae: F.SAE, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    z = np.zeros((len(x), sae.d_sae))
    for i, row in enumerate(x.astype(np.float64)):
        pre = [
            sum(sae.W_enc[j, a] * (row[j] - sae.b_dec[j]) for j in range(sae.d_in)) + sae.b_enc[a]
            for a in range(sae.d_sae)
        ]
        for a in sorted(range(sae.d_sae), key=lambda a: -pre[a])[: sae.k]:
            z[i, a] = max(pre[a], 0.0)
    x_hat = np.array(
        [sae.b_dec + sum(z[i, a] * sae.W_dec[a] for a in range(sae.d_sae)) for i in range(len(x))]
    )
    return z, x_hat


def test_encode_decode_equal_a_hand_written_forward():
    sae = _random_sae()
    x = np.random.default_rng(1).normal(size=(7, sae.d_in)).astype(np.float32)
    z_ref, x_ref = _forward_by_hand(sae, x)
    z = sae.encode(x)
    np.testing.assert_allclose(z, z_ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(sae.decode(z), x_ref, rtol=1e-4, atol=1e-4)
    idx, val = sae.encode_topk(x)
    np.testing.assert_allclose(sae.decode_topk(idx, val), x_ref, rtol=1e-4, atol=1e-4)


def test_metrics_equal_plain_formulas():
    sae = _random_sae()
    x = np.random.default_rng(2).normal(size=(50, sae.d_in)).astype(np.float32)
    z_ref, x_ref = _forward_by_hand(sae, x)
    m = F.evaluate(sae, [x[:20], x[20:]])  # chunked: same numbers as whole
    fvu = ((x - x_ref) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
    assert m.fvu == pytest.approx(fvu, rel=1e-4)
    assert m.l0 == pytest.approx((z_ref > 0).sum(1).mean())
    assert m.dead_fraction == pytest.approx(((z_ref > 0).sum(0) == 0).mean())
    np.testing.assert_allclose(m.density, (z_ref > 0).mean(0), atol=1e-6)
    np.testing.assert_allclose(m.max_act, z_ref.max(0), rtol=1e-4, atol=1e-5)


def test_geometric_median_is_robust():
    x = np.r_[np.zeros((9, 2)), [[100.0, 100.0]]]
    assert np.linalg.norm(F.geometric_median(x)) < 1e-3


def test_learned_decoder_recovers_sparse_generators():
    rng = np.random.default_rng(0)
    d, m, n = 32, 64, 20_000
    G = rng.normal(size=(m, d))
    G /= np.linalg.norm(G, axis=1, keepdims=True)
    ids = np.stack([rng.choice(m, 3, replace=False) for _ in range(n)])
    x = (np.einsum("nk,nkd->nd", rng.uniform(0.5, 2, (n, 3)), G[ids]) + 0.5).astype(np.float32)
    tr = F.train(F.array_source(x[:16_000]), 16_000, 64, 3, seed=0, tokens=200_000, batch=256)
    cos = np.abs(G @ tr.sae.W_dec.T).max(1).mean()
    assert cos >= 0.9
    np.testing.assert_allclose(np.linalg.norm(tr.sae.W_dec, axis=1), 1, atol=1e-5)
    held = F.evaluate(tr.sae, [x[16_000:]])
    assert held.fvu < 0.2 and held.l0 <= 3
    # seeded: the same data and seed give the same weights
    again = F.train(F.array_source(x[:16_000]), 16_000, 64, 3, seed=0, tokens=2048, batch=256)
    twice = F.train(F.array_source(x[:16_000]), 16_000, 64, 3, seed=0, tokens=2048, batch=256)
    np.testing.assert_array_equal(again.sae.W_enc, twice.sae.W_enc)


def test_bad_k_is_refused():
    with pytest.raises(ValueError, match="k must"):
        F.train(F.array_source(np.ones((10, 4), np.float32)), 10, 8, 9)


def test_cancel_stops_before_the_first_step():
    x = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
    tr = F.train(F.array_source(x), 64, 8, 2, should_stop=lambda: True)
    assert tr.cancelled and tr.steps == 0
