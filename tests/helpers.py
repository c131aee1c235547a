"""Test helpers shared across the suite: hypothesis strategies for awkward arrays, and
central finite differences for gradient checks."""
import numpy as np
from hypothesis import strategies as st

# sizes that exercise the edges: 1, odd, not a multiple of 4 or of a tile
dims = st.sampled_from([1, 2, 3, 5, 7, 8, 13])
small_dims = st.sampled_from([1, 2, 3, 5])

# The reference fixture (tests/data/ref_small): the reference computes its fused norm+quantize
# kernels and its recurrence in float32 inside a float64 model, so an exact float64 oracle
# differs from it by a few float32 roundings (u32 = 6e-8) on every activation. Measured (2026-12-02): logits 8.9e-8 (1.5 u32, Frobenius),
# loss 3.8e-10 (the mean over 30 positions averages the rounding out), gradients at most
# 4.5e-7 (g_norm.weight: the backward chains ~8 float32-rounded factors). The bounds are
# 2.5 u32 for logits, 2e-9 for the loss and 1e-6 for gradients: about 2x the measured gap,
# and below what a g_norm eps of 1e-5 instead of 1e-6 gives (logits 1.9e-7, gradients 2.0e-6).
LOGITS_BOUND = 2.5 * 2.0 ** -24
LOSS_BOUND = 2e-9
GRAD_BOUND = 1e-6
# Used by tests/mmfree_ref/test_model.py (the oracle's functions) and cli/test_main.py (the
# `mmfree` command on the same files, which allowed 1e-6 / 1e-5 before): the same arithmetic,
# so the same bounds.


@st.composite
def awkward_arrays(draw, shape, dtype=np.float64):
    """A float array of `shape` whose rows have a drawn character: ordinary, all-zero, huge
    (1e30), tiny (1e-30) or exact-.5 steps; seeded from hypothesis so failures shrink."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["normal", "zero_rows", "huge", "tiny", "halves", "mixed"]))
    x = rng.standard_normal(shape)
    if kind == "zero_rows" and x.ndim >= 1:
        rows = rng.random(x.shape[:-1]) < 0.5
        x[rows] = 0.0
    elif kind == "huge":
        x *= 1e30
    elif kind == "tiny":
        x *= 1e-30
    elif kind == "halves":
        x = np.round(x * 4) / 2          # multiples of 0.5: ties in rounding
    elif kind == "mixed":
        x *= 10.0 ** rng.integers(-8, 8, size=shape)
    return x.astype(dtype)


def numerical_grad(f, x, h=1e-6):
    """Central differences of the scalar f() w.r.t. every entry of the float64 array x (in place)."""
    g = np.zeros_like(x)
    flat, gflat = x.reshape(-1), g.reshape(-1)
    for k in range(flat.size):
        old = flat[k]
        flat[k] = old + h
        fp = f()
        flat[k] = old - h
        fm = f()
        flat[k] = old
        gflat[k] = (fp - fm) / (2 * h)
    return g


def assert_grad_close(analytic, f, x, name, rtol=1e-6):
    """Central differences with h=1e-6 in float64 have truncation error O(h^2 f''') ~ 1e-12
    relative and rounding error ~ 2.2e-16 |f| / h ~ 2.2e-10 |f| absolute per entry. So the bound
    is rtol * |FD| plus 1e-9 (|f| + 1) sqrt(size) for the rounding: on O(1) functions that is
    ~1e-7 relative, far below any real mistake.

    One bound for every FD check in the suite, so on smooth callers it is loose: measured
    (2026-12-02, ci profile) the worst caller, test_mlgru's dh0, uses 0.1 of it, rmsnorm's
    dweight 5e-4 (docs/bounds.md). It is not tightened per caller because the truncation term
    h^2 |f3| / 6 (f3 the third derivative) depends on derivatives the drawn inputs do not
    bound (sigmoid gates near saturation, rms norms of near-zero rows), and a wrong gradient
    is off by O(1), not by 1e-6."""
    num = numerical_grad(f, x)
    err = np.linalg.norm(analytic - num)
    bound = rtol * np.linalg.norm(num) + 1e-9 * (abs(f()) + 1) * np.sqrt(x.size)
    assert err <= bound, f"{name}: |analytic - FD| = {err:.3e} > bound {bound:.3e}"


def rel_err(a, b):
    """Frobenius norm of a - b over that of b."""
    return np.linalg.norm(a - b) / np.linalg.norm(b)


def perturbed_params(config, seed, norm_spread=0.5, lb_scale=1.0):
    """init_params of config with every norm weight drawn from 1 +- norm_spread and the lower
    bounds from N(0, lb_scale^2), as trained checkpoints have them -> params, the rng (for ids)."""
    from mmfree_ref.params import init_params
    rng = np.random.default_rng(seed)
    p = init_params(config, seed=seed)
    for k in p:
        if k.endswith("norm.weight"):
            p[k] = rng.uniform(1 - norm_spread, 1 + norm_spread, p[k].shape)
    p["model.lower_bounds"] = rng.standard_normal(p["model.lower_bounds"].shape) * lb_scale
    return p, rng
