"""gpu/gemm_mma.py (the wgmma GEMM) against mmfree_ref.bitlinear.

Integer accumulators: exact, every tile configuration, awkward M, N, K (not multiples of any
tile), all-zero rows of q and t, the extreme codes -128 and 127, long K. Under the simulator the
kernel runs with the Python twins of gpu/wgmma.py (narrow tiles, small shapes); on the GPU
(MMFREE_GPU=1) with the tensor cores, every tile of gemm_mma.TILES, bigger shapes.

Epilogue: y = float32(acc) * (1 / (sx sw)) with sx, sw the float32 scales. It must equal that
float32 expression computed by NumPy bit for bit (one multiply by the row's factor, IEEE
rounding in both), and the float64 oracle bitlinear_int within 5 roundings of 2^-24: the two
scales rounded to float32, their product, the reciprocal and the multiply (float32(acc) is
exact for |acc| < 2^24).
"""
import numpy as np
import pytest
from hypothesis import Phase, given, settings, strategies as st

from mmfree_ref.bitlinear import BITLINEAR_EPS, bitlinear_int, ternary_accumulate as ref_accumulate
from mmfree_ref.quantize import absmax_int8, absmean_ternary
from mmfree_ref.rmsnorm import rmsnorm

from gpu import gemm_mma
from gpu.common import SIMULATOR, validate
from gpu.gemm_mma import SIM_TILES, TILES, Tile, check_tile, dequantized_accumulate, ternary_accumulate
from tests.gpu.helpers import dim

TILE_LIST = list(SIM_TILES) if SIMULATOR else list(TILES.values())
# each simulated call runs ~100 Python threads per block: few examples there; on the GPU every
# tile compiles once (~10 s) and then an example costs milliseconds
EXAMPLES = 3 if SIMULATOR else 6
# no shrinking on the GPU (device minutes are scarce; the message names the case)
PHASES = list(Phase) if SIMULATOR else [Phase.explicit, Phase.reuse, Phase.generate]
gpu_only = pytest.mark.skipif(SIMULATOR, reason="large shapes: each CUDA thread is a Python thread "
                              "in the simulator")
EPS32 = 2.0**-24


@st.composite
def codes(draw):
    """(q, t): awkward shapes, random codes with the extremes, optional all-zero rows."""
    m = draw(st.integers(1, dim(70, 260)))
    n = draw(st.integers(1, dim(40, 520)))
    k = draw(st.one_of(st.sampled_from([1, 16, 31, 127, 129]), st.integers(1, dim(300, 2500))))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    q = rng.integers(-128, 128, (m, k), dtype=np.int8)
    t = rng.integers(-1, 2, (n, k), dtype=np.int8)
    q[0, : k // 2] = -128                         # the extremes, side by side
    q[-1, k // 2:] = 127
    if draw(st.booleans()):
        q[m // 2] = 0                             # an all-zero token
    if draw(st.booleans()):
        t[n // 2] = 0                             # an all-zero weight row
    return q, t


@pytest.mark.parametrize("tile", TILE_LIST, ids=lambda t: t.name)
@settings(max_examples=EXAMPLES, phases=PHASES)
@given(qt=codes())
def test_accumulators_equal_the_oracle(tile, qt):
    q, t = qt
    validate(ternary_accumulate(q, t, tile), ref_accumulate(q, t),
             f"wgmma {tile.name} q {q.shape} t {t.shape}")


@pytest.mark.parametrize("tile", TILE_LIST[:1], ids=lambda t: t.name)
def test_extreme_codes_over_a_long_k(tile):
    # -128 against +1 and 127 against -1 over all of K: |acc| = 128 K, the largest a row can
    # reach. On the GPU K = 2^17 (acc = -2^24: still exact in the float32 epilogue); the
    # independent value is the closed form, not the oracle's own loop.
    k = dim(700, 2**17)
    q = np.full((3, k), -128, np.int8)
    q[1] = 127
    q[2, ::2] = 127
    t = np.ones((5, k), np.int8)
    t[1] = -1
    t[2, 1::2] = 0
    want = q.astype(np.int64) @ t.astype(np.int64).T
    assert want[0, 0] == -128 * k
    validate(ternary_accumulate(q, t, tile), want, f"extremes K={k}")


@gpu_only
def test_the_int32_range_edge():
    # The largest K the boundary accepts: K * 128 < 2^31. A saturating or narrower accumulator
    # would fail; one past it is refused.
    k = (2**31 - 1) // 128
    q = np.full((1, k), -128, np.int8)
    t = np.ones((2, k), np.int8)
    t[1] = -1
    validate(ternary_accumulate(q, t), np.array([[-128 * k, 128 * k]]), f"K={k}")
    with pytest.raises(ValueError, match="too long for an int32 accumulator"):
        ternary_accumulate(np.zeros((1, k + 1), np.int8), np.zeros((1, k + 1), np.int8))


@gpu_only
def test_a_large_awkward_shape_is_exact():
    # Many blocks in both directions and a K tail, against the float64 product (exact: every
    # partial sum is an integer far below 2^53) and, on a slice, the oracle itself.
    rng = np.random.default_rng(20)
    m, n, k = 2047, 2049, 2051
    q = rng.integers(-128, 128, (m, k), dtype=np.int8)
    t = rng.integers(-1, 2, (n, k), dtype=np.int8)
    got = ternary_accumulate(q, t).copy_to_host()
    validate(got, q.astype(np.float64) @ t.astype(np.float64).T, "2047x2049x2051")
    validate(got[-9:], ref_accumulate(q[-9:], t), "last rows vs the oracle")


def _layer(rng, m, n, k):
    x = rng.standard_normal((m, k)) * rng.uniform(0.01, 100, (m, 1))
    weight = rng.standard_normal((n, k)) * 0.02
    norm_weight = rng.uniform(0.5, 1.5, k)
    return x, weight, norm_weight


@pytest.mark.parametrize("tile", TILE_LIST[:1], ids=lambda t: t.name)
@pytest.mark.parametrize("shape", [(5, 9, 70), (66, 17, 200)] if SIMULATOR else
                         [(5, 9, 70), (300, 700, 2100), (1000, 256, 512)])
def test_dequantizing_epilogue(tile, shape):
    rng = np.random.default_rng(sum(shape))
    x, weight, norm_weight = _layer(rng, *shape)
    q, scale_x = absmax_int8(rmsnorm(x, norm_weight, BITLINEAR_EPS))
    t, scale_w = absmean_ternary(weight)
    y = dequantized_accumulate(q, scale_x, t, float(scale_w), tile).copy_to_host()
    sx32, sw32 = scale_x.reshape(-1).astype(np.float32), np.float32(scale_w)
    acc = ref_accumulate(q, t)
    replica = acc.astype(np.float32) * (np.float32(1) / (sx32 * sw32))[:, None]
    validate(y, replica, "epilogue vs its float32 expression")              # bit for bit
    oracle = bitlinear_int(x, weight, norm_weight)
    validate(y, oracle, "epilogue vs bitlinear_int", atol=1e-30, rtol=5 * EPS32)


@pytest.mark.parametrize("tile,match", [
    (Tile(2, 40, 64, 4), "wgmma m64nNk32 .s8 has N in"),
    (Tile(3, 128, 64, 4), "wg .* must be 1 or 2"),
    (Tile(2, 256, 48, 4), "bk must be 32, 64 or 128"),
    (Tile(2, 256, 64, 2), "stages must be >= 3"),
    (Tile(2, 256, 64, 4, 0, 2), "ahead .* must be 0 or 1"),
    (Tile(2, 256, 64, 4, 64), "swizzle must be one of"),
    (Tile(2, 256, 64, 4, 128), "needs tiles 128 bytes deep"),
    (Tile(2, 256, 128, 6), "needs 294912 bytes of shared memory")])
def test_impossible_tiles_are_refused(tile, match):
    with pytest.raises(ValueError, match=match):
        check_tile(tile)


@pytest.mark.parametrize("q,t,match", [
    (np.zeros((2, 4)), np.zeros((3, 4), np.int8), "q must be an integer array"),
    (np.zeros((2, 4), np.int16), np.zeros((3, 4), np.int8), "q and t must be int8"),
    (np.zeros((2, 4), np.int8), np.full((3, 4), 2, np.int8), "t has value 2 out of range"),
    (np.zeros((2, 4), np.int8), np.zeros((3, 5), np.int8), r"t must have shape \(d_out, 4\)"),
    (np.zeros((0, 4), np.int8), np.zeros((3, 4), np.int8), "must be non-empty")])
def test_bad_codes_are_refused(q, t, match):
    with pytest.raises(ValueError, match=match):
        ternary_accumulate(q, t)


@pytest.mark.parametrize("scale_x,scale_w,match", [
    (np.ones(3), 1.0, "scale_x must hold 2 positive finite values"),
    (np.array([1.0, -1.0]), 1.0, "scale_x must hold 2"),
    (np.ones(2), 0.0, "scale_w must be a positive finite float")])
def test_bad_scales_are_refused(scale_x, scale_w, match):
    with pytest.raises(ValueError, match=match):
        dequantized_accumulate(np.zeros((2, 4), np.int8), scale_x, np.zeros((3, 4), np.int8),
                               scale_w)


def test_device_layout_must_be_padded():
    from numba import cuda
    q = cuda.to_device(np.zeros((2, 100), np.int8))
    with pytest.raises(ValueError, match="multiple of 128"):
        gemm_mma.launch(q, q, q, 1.0, gemm_mma.ACC, q, q)


# --------------------------------------------------------------------------- the three modes, v0

@pytest.mark.parametrize("version", ["wgmma", "rows"])
def test_every_mode_of_both_versions_is_exact(version):
    """ACC (int32, exact), STORE against the float32 expression bit for bit, ADD (y +=, the
    prefill's residual) within its one ulp of FMA contraction, on wgmma (the default tile) and on v0 gemm_rows; 5 rows and 24
    columns span several v0 blocks and leave the wgmma tile partly empty."""
    from numba import cuda
    rng = np.random.default_rng(1)
    m, n, k = 5, 24, 200
    q = rng.integers(-128, 128, (m, k), dtype=np.int8)
    t = rng.integers(-1, 2, (n, k), dtype=np.int8)
    sx, sw = rng.uniform(0.5, 2, m).astype(np.float32), np.float32(1.3)
    y0 = rng.standard_normal((m, n)).astype(np.float32)
    acc = q.astype(np.int64) @ t.astype(np.int64).T
    dequant = acc.astype(np.float32) * (np.float32(1) / (sx * sw))[:, None]
    q_d, t_d = (cuda.to_device(gemm_mma.kmajor_codes(a)) for a in (q, t))
    sx_d = cuda.to_device(sx)
    tile = SIM_TILES[1] if SIMULATOR else gemm_mma.DEFAULT
    run = ((lambda *a: gemm_mma.launch(*a, tile)) if version == "wgmma"
           else gemm_mma.launch_rows)
    dummy_f, dummy_i = cuda.to_device(np.zeros((1, 1), np.float32)), cuda.to_device(
        np.zeros((1, 1), np.int32))
    acc_d = cuda.to_device(np.full((m, n), -7, np.int32))
    run(q_d, t_d, sx_d, sw, gemm_mma.ACC, dummy_f, acc_d)
    validate(acc_d, acc, f"{version} ACC")
    y = cuda.to_device(np.full((m, n), np.nan, np.float32))
    run(q_d, t_d, sx_d, sw, gemm_mma.STORE, y, dummy_i)
    validate(y, dequant, f"{version} STORE")
    y = cuda.to_device(y0)
    run(q_d, t_d, sx_d, sw, gemm_mma.ADD, y, dummy_i)
    # y + float32(acc) f: the GPU contracts it to one FMA (one rounding), NumPy and the
    # simulator round twice: within one ulp of the sum
    validate(y, y0 + dequant, f"{version} ADD", rtol=EPS32 * 2)


# --------------------------------------------------------------------------- the device it needs

def pretend_gpu(monkeypatch, capability, name):
    """From here on gpu.common.require_capability (and gemm_mma.require_wgmma) see a real GPU
    of that compute capability and name, as under NUMBA_ENABLE_CUDASIM=0 (nothing is run)."""
    from types import SimpleNamespace

    import gpu.common
    from numba import cuda
    monkeypatch.setattr(gpu.common, "SIMULATOR", False)
    device = SimpleNamespace(compute_capability=capability, name=name.encode())
    monkeypatch.setattr(cuda, "get_current_device", lambda: device)


@pytest.mark.parametrize("capability, name, need", [
    ((8, 0), "NVIDIA A100-SXM4-80GB", "9.0 or newer"), ((7, 5), "Tesla T4", "9.0 or newer"),
    ((10, 0), "NVIDIA B200", "9.x (Hopper)")])
def test_a_gpu_without_wgmma_is_refused_in_one_line_before_compiling(monkeypatch, capability,
                                                                     name, need):
    monkeypatch.setattr(gemm_mma, "_make_kernel", lambda tile: pytest.fail("compiled"))
    monkeypatch.setattr(gemm_mma, "_KERNELS", {})
    pretend_gpu(monkeypatch, capability, name)
    with pytest.raises(ValueError) as e:
        ternary_accumulate(np.zeros((2, 4), np.int8), np.zeros((3, 4), np.int8))
    assert str(e.value) == (f"the int8 wgmma GEMM (gpu/gemm_mma.py, sm_90a) needs a GPU of "
                            f"compute capability {need}; this {name} is "
                            f"{capability[0]}.{capability[1]}")


def test_a_hopper_passes_the_check(monkeypatch):
    pretend_gpu(monkeypatch, (9, 0), "NVIDIA H200")
    gemm_mma.require_wgmma()
