"""The GLU channel mixer's element-wise part, float32: the CPU twin of mmfree_ref.glu.glu_forward
between its two BitLinears (gate_proj's output split in two, then silu(gate) * u). glu runs its
rows in parallel, glu_serial the same row code on the calling thread (a decode step's rows)."""
from numba import njit, prange

from cpu.activations import silu


@njit(inline="always")
def _glu_row(z, out, m):
    n = out.shape[1]
    gate, u, o = z[m, :n], z[m, n:], out[m]      # views: see mlgru._gates_row
    for j in range(n):
        o[j] = silu(gate[j]) * u[j]


@njit(parallel=True, cache=True, error_model="numpy")
def glu(z, out):
    """z (M, 2 N) float32, columns [gate | u] -> out (M, N) = silu(gate) * u."""
    for m in prange(z.shape[0]):
        _glu_row(z, out, m)


@njit(cache=True, error_model="numpy")
def glu_serial(z, out):
    """glu on the calling thread alone (no parallel region)."""
    for m in range(z.shape[0]):
        _glu_row(z, out, m)
