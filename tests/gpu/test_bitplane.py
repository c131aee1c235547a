"""Tests of gpu/bitplane.py against the oracle (mmfree_ref/bitplane/planes.py), exact equality.

The same file runs under the CUDA simulator (CI: tiny shapes, few examples, GPU-only versions
skipped) and on a real GPU (MMFREE_GPU=1: bigger shapes, every version). Outputs are poisoned
before each launch (gpu.common.poisoned), so an output a kernel never wrote fails.
"""
import numpy as np
import pytest
from hypothesis import Phase, given, settings, strategies as st
from numba import cuda

from gpu import bitplane as bp
from gpu.common import SIMULATOR, poisoned
from mmfree_ref.bitlinear import ternary_accumulate
from mmfree_ref.bitplane.planes import matmul_planes, pack_planes
from mmfree_ref.bitplane.intformats import FORMATS, plane_weights, value_set
from mmfree_ref.quantize import absmax_int8, absmean_ternary

gpu_only = pytest.mark.skipif(SIMULATOR, reason="needs a real GPU (tensor cores / linked CUDA C++)")
WIDTHS = {fmt: [2] if fmt == "ternary" else list(range(1, 9)) for fmt in FORMATS}
# (max M, max N, max K): the simulator runs every thread as a Python thread
SHAPES = (3, 6, 80) if SIMULATOR else (80, 300, 1200)
EXAMPLES = {"v1": 8, "v2": 4, "v3": 2, "bmma": 0} if SIMULATOR else \
           {"v1": 4, "v2": 8, "v3": 5, "bmma": 10}
# On the GPU every example compiles a kernel (~1 s) and device minutes are scarce: no shrinking
# there (the failure message names the case); the simulator keeps hypothesis's full phases.
PHASES = list(Phase) if SIMULATOR else [Phase.explicit, Phase.reuse, Phase.generate]


@st.composite
def problems(draw):
    a_fmt, w_fmt = draw(st.sampled_from(FORMATS)), draw(st.sampled_from(FORMATS))
    abits, wbits = draw(st.sampled_from(WIDTHS[a_fmt])), draw(st.sampled_from(WIDTHS[w_fmt]))
    M_max, N_max, K_max = SHAPES
    M, N = draw(st.integers(1, M_max)), draw(st.integers(1, N_max))
    K = draw(st.one_of(st.sampled_from([1, 31, 32, 33, 255, 257]), st.integers(1, K_max)))
    K = min(K, K_max)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    a = rng.choice(value_set(a_fmt, abits), (M, K)).astype(np.int32)
    w = rng.choice(value_set(w_fmt, wbits), (N, K)).astype(np.int32)
    a[0, :] = value_set(a_fmt, abits)[-1]           # a row of the largest value
    w[-1, :] = value_set(w_fmt, wbits)[0]           # and one of the most negative
    return a, a_fmt, abits, w, w_fmt, wbits


def oracle(a, a_fmt, abits, w, w_fmt, wbits):
    K = a.shape[1]
    return matmul_planes(pack_planes(a, a_fmt, abits), a_fmt, pack_planes(w, w_fmt, wbits),
                         w_fmt, K)


def check_version(version, case):
    a, a_fmt, abits, w, w_fmt, wbits = case
    got = bp.bitplane_matmul(a, a_fmt, abits, w, w_fmt, wbits, version)
    want = oracle(*case)
    assert np.array_equal(want, a.astype(np.int64) @ w.astype(np.int64).T)
    bad = np.argwhere(got != want)
    assert bad.size == 0, (f"{version} {abits}-bit {a_fmt} x {wbits}-bit {w_fmt}, shape "
                           f"{a.shape} x {w.shape}: {len(bad)} wrong, first {tuple(bad[0])}: "
                           f"got {got[tuple(bad[0])]}, want {want[tuple(bad[0])]}")


@settings(max_examples=EXAMPLES["v1"], phases=PHASES)
@given(problems())
def test_v1_naive_equals_the_oracle(case):
    check_version("v1", case)


@settings(max_examples=EXAMPLES["v2"], phases=PHASES)
@given(problems())
def test_v2_split_k_gemv_equals_the_oracle(case):
    check_version("v2", case)


@settings(max_examples=EXAMPLES["v3"], phases=PHASES)
@given(problems())
def test_v3_tiled_gemm_equals_the_oracle(case):
    check_version("v3", case)


@gpu_only
@settings(max_examples=max(1, EXAMPLES["bmma"]), phases=PHASES)
@given(problems())
def test_bmma_tensor_core_equals_the_oracle(case):
    check_version("bmma", case)


@pytest.mark.parametrize("version,variant", [
    ("v2", ()), ("v2", (4, 1)),
    pytest.param("bmma", bp.BMMA_GEMV, marks=gpu_only),
    pytest.param("bmma", bp.BMMA_GEMM, marks=gpu_only)])
def test_edges_of_tiles_and_mma_steps(version, variant):
    # N and M just past a block / warp tile, K just past a 256-bit MMA step: the tails; each
    # variant (split-K, m-blocking) on the same problem.
    rng = np.random.default_rng(11)
    M, N, K = (2, 33, 257) if SIMULATOR else (17, 16 * 8 + 1, 2 * 256 + 1)
    a = rng.integers(-128, 128, (M, K)).astype(np.int32)
    t = rng.integers(-1, 2, (N, K)).astype(np.int32)
    a_d = cuda.to_device(bp.layout(pack_planes(a, "signed", 8), version))
    w_d = cuda.to_device(bp.layout(pack_planes(t, "ternary", 2), version))
    out = poisoned((M, N), np.int32)
    bp.launch(version, out, a_d, w_d, K, "signed", 8, "ternary", 2, variant=variant)
    assert np.array_equal(out.copy_to_host(), a.astype(np.int64) @ t.T)


def test_the_bitlinear_integer_core_by_planes_on_the_gpu():
    # absmax_int8 activations x absmean_ternary weights: BitLinear's accumulator, exactly.
    rng = np.random.default_rng(5)
    M, N, K = (2, 5, 70) if SIMULATOR else (4, 640, 2560)
    q, _ = absmax_int8(rng.standard_normal((M, K)))
    t, _ = absmean_ternary(rng.standard_normal((N, K)))
    got = bp.bitplane_matmul(q.astype(np.int32), "signed", 8, t.astype(np.int32), "ternary", 2, "v2")
    assert np.array_equal(got, ternary_accumulate(q, t))


@pytest.mark.parametrize("version", ["int8_v2", "int8_v3", pytest.param("int8_v2_dp4a", marks=gpu_only),
                                     pytest.param("int8_v3_dp4a", marks=gpu_only)])
def test_int8_baselines_equal_the_integer_matmul(version):
    rng = np.random.default_rng(6)
    M, N, K = (2, 5, 37) if SIMULATOR else (70, 300, 1001)
    a = rng.integers(-128, 128, (M, K)).astype(np.int8)
    w = rng.integers(-128, 128, (N, K)).astype(np.int8)
    a[0], w[0] = -128, -128                              # the extreme product, K times
    got = bp.int8_matmul(a, w, version)
    assert np.array_equal(got, a.astype(np.int64) @ w.astype(np.int64).T)


def test_int8_words_layout():
    x = np.array([[1, -2, 3, -128, 5]], np.int8)
    words = bp.int8_words(x)                             # (2, 1): bytes 1, -2, 3, -128 | 5, 0, 0, 0
    assert words.shape == (2, 1) and words.dtype == np.int32
    assert words[0, 0] == np.int32(np.uint32(0x80_03_FE_01).view(np.int32))
    assert words[1, 0] == 5


@pytest.mark.parametrize("a_fmt", FORMATS)
@pytest.mark.parametrize("w_fmt", FORMATS)
def test_recovery_constant_matches_the_plane_weights(a_fmt, w_fmt):
    abits, wbits = WIDTHS[a_fmt][-1], WIDTHS[w_fmt][-1]
    xor, _, _, c_a, c_w, k_const = bp.recovery(a_fmt, abits, w_fmt, wbits)
    assert xor == (a_fmt == w_fmt == "bipolar")
    if xor:        # sum_ij 2^(i+j) (K - 2 X): the K part
        assert k_const == (2**abits - 1) * (2**wbits - 1)
    else:
        assert (c_a, c_w) == (plane_weights(a_fmt, abits)[1], plane_weights(w_fmt, wbits)[1])
        assert k_const == c_a * c_w


def test_bmma_layout_pads_to_whole_mma_steps_with_zero_words():
    planes = pack_planes(np.ones((3, 300), np.int32), "unsigned", 1)      # 10 words
    padded = bp.layout(planes, "bmma")
    assert padded.shape == (1, 3, 16)
    assert np.array_equal(padded[..., :10], planes) and not padded[..., 10:].any()
    assert bp.layout(planes, "v2").shape == (1, 10, 3)                     # k-major


@pytest.mark.parametrize("call,match", [
    (lambda: bp.kernel("v9", "signed", 8, "ternary", 2), "version must be one of"),
    (lambda: bp.bitplane_matmul(np.ones((2, 3), np.int32), "signed", 8,
                                np.ones((2, 4), np.int32), "signed", 8), "same K"),
    (lambda: bp.check_int32_range("signed", 8, "signed", 8, 2**17), "too long"),
    (lambda: bp.int8_matmul(np.ones((2, 3), np.int32), np.ones((2, 3), np.int8)), "int8"),
    (lambda: bp.int8_kernel("int8_v9"), "version must be one of"),
])
def test_bad_input_raises_a_named_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.skipif(not SIMULATOR, reason="checks the simulator's refusal")
def test_gpu_only_versions_refuse_the_simulator():
    with pytest.raises(ValueError, match="real GPU"):
        bp.kernel("bmma", "signed", 8, "ternary", 2)
    with pytest.raises(ValueError, match="real GPU"):
        bp.int8_kernel("int8_v2_dp4a")


@gpu_only
@pytest.mark.parametrize("op", ["and", "xor"])
def test_bmma_fragment_layout_is_the_documented_one(op):
    # One mma.sync m16n8k256 with random bits, fragments loaded as gpu/bitplane.py documents;
    # D must be the popcount product of A (16 x 8 words) and B (8 columns x 8 words) plus C.
    mma = bp.FOREIGN[op]

    @cuda.jit(link=bp.FOREIGN["link"])
    def one_mma(d, A, B, C):
        lane = cuda.threadIdx.x
        g, t = lane // 4, lane % 4
        r = mma(A[g, t], A[g + 8, t], A[g, t + 4], A[g + 8, t + 4], B[g, t], B[g, t + 4],
                C[g, 2 * t], C[g, 2 * t + 1], C[g + 8, 2 * t], C[g + 8, 2 * t + 1])
        d[g, 2 * t], d[g, 2 * t + 1], d[g + 8, 2 * t], d[g + 8, 2 * t + 1] = r[0], r[1], r[2], r[3]

    rng = np.random.default_rng(8)
    A = rng.integers(0, 2**32, (16, 8), dtype=np.uint64).astype(np.uint32)
    B = rng.integers(0, 2**32, (8, 8), dtype=np.uint64).astype(np.uint32)
    C = rng.integers(-1000, 1000, (16, 8)).astype(np.int32)
    d = cuda.to_device(np.full((16, 8), -7, np.int32))
    one_mma[1, 32](d, A, B, C)
    both = (A[:, None, :] & B[None]) if op == "and" else (A[:, None, :] ^ B[None])
    want = np.bitwise_count(both).sum(-1).astype(np.int32) + C
    assert np.array_equal(d.copy_to_host(), want)


@pytest.mark.parametrize("fmt,bits", [("signed", 3), ("bipolar", 2), ("ternary", 2), ("unsigned", 8)])
def test_bench_reference_decodes_planes_like_the_oracle(fmt, bits):
    from gpu.bench.bitplane import plane_values, random_planes
    from mmfree_ref.bitplane.planes import unpack_planes

    planes = random_planes(np.random.default_rng(9), fmt, bits, 3, 70)
    assert np.array_equal(plane_values(planes, fmt, 70), unpack_planes(planes, fmt, bits, 70))
