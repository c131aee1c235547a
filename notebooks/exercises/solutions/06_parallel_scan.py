# %% [markdown]
# # Exercise 6: the recurrence as a parallel scan
#
# Over a whole sequence the MLGRU computes $h_t = f_t \odot h_{t-1} + c_t$ for
# $t = 1 \dots T$ (element-wise, $h_0$ given or zero). A loop takes $T$ dependent steps. A GPU
# wants $\log_2 T$ steps of independent work instead. Write each step as a pair
# $(a, b)$ meaning "$h \mapsto a h + b$"; doing $(a_1, b_1)$ then $(a_2, b_2)$ is
#
# $$(a_1, b_1) \circ (a_2, b_2) = (a_1 a_2,\ a_2 b_1 + b_2),$$
#
# which is associative. The Hillis-Steele scan starts from $(a_t, b_t) = (f_t, c_t)$ and, for
# offset $= 1, 2, 4, \dots < T$, combines every element $t \ge$ offset with element
# $t - $ offset, all $t$ at once, from the previous round's values. After the last round
# $b_t = h_t$. Fold a given $h_0$ into the first element first: $b_1 = c_1 + f_1 h_0$.
#
# (The shortcut $h_t = P_t \sum_{s \le t} c_s / P_s$ with $P_t = \prod_{s \le t} f_s$ looks
# simpler; try it on 400 gates of size 0.005 and see why the grader refuses it.)
#
# Write `mlgru_scan_parallel(f, c, h0=None)` for `f`, `c` of shape `(B, T, D)`, `h0` of shape
# `(B, D)` or None, returning `h` of shape `(B, T, D)`. Loop over the rounds, not over `t`.

# %%
import numpy as np

from mmfree_ref.exercises import check_mlgru_scan_parallel


# %%
def mlgru_scan_parallel(f, c, h0=None):
    """f, c: (B, T, D), h0: (B, D) or None -> h (B, T, D)."""
    # BEGIN SOLUTION
    a, b = f.copy(), c.copy()
    if h0 is not None:
        b[:, 0] = b[:, 0] + a[:, 0] * h0
    offset = 1
    while offset < f.shape[1]:
        b_new = b.copy()
        b_new[:, offset:] = a[:, offset:] * b[:, :-offset] + b[:, offset:]
        a_new = a.copy()
        a_new[:, offset:] = a[:, offset:] * a[:, :-offset]
        a, b, offset = a_new, b_new, 2 * offset
    return b
    # END SOLUTION


# %%
check_mlgru_scan_parallel(mlgru_scan_parallel)

# %% [markdown]
# The shortcut from the top, on 400 gates of 0.005 (and $c_t = 1$): $1/P_t = 200^t$ passes
# float64's largest number, about $10^{308}$, after $308 / \log_{10} 200 \approx 134$ tokens,
# and from there on the closed form gives inf or nan. The scan never divides: its products of
# gates only shrink (to 0 at worst, which is harmless), and $h_t$ settles at
# $c / (1 - f) = 1 / 0.995$ to the last bit.

# %%
f = np.full((1, 400, 1), 0.005)
c = np.ones_like(f)
with np.errstate(all="ignore"):
    P = np.cumprod(f, axis=1)
    closed = P * np.cumsum(c / P, axis=1)
h = mlgru_scan_parallel(f, c)
first_bad = int(np.argmin(np.isfinite(closed[0, :, 0])))
print(f"closed form: first inf or nan at t = {first_bad}; your scan: h_400 = {h[0, -1, 0]:.6f}")
assert 130 <= first_bad <= 135, "the shortcut should break near t = 134"
# each round rounds once (1.1e-16) and the gates of 0.005 damp every earlier error
assert abs(h[0, -1, 0] - 1 / 0.995) < 1e-15, "the scan should reach 1 / (1 - f)"
