# %% [markdown]
# # Exercise 7: packing ternary weights into 2 bits
#
# A ternary weight needs 2 bits, so a byte holds 4 weights, and a model's weights take 8x less
# memory than in 16-bit floats: the reason MatMul-free decoding, which is limited by how fast
# weights stream from memory, gets faster. The layout this package shares with its GPU kernels
# and its FPGA model (`mmfree_ref/formats/packing.py`):
#
# * codes: `0b00` -> 0, `0b01` -> +1, `0b10` -> -1 (`0b11` unused);
# * packing runs along the last axis (`d_in`): weight $j$ of a row goes to byte $j // 4$, at
#   bits $2 (j \bmod 4)$ and $2 (j \bmod 4) + 1$, the first weight in the lowest bits;
# * a row of `d_in` weights takes $\lceil d_{in} / 4 \rceil$ bytes; pad weights are code `0b00`.
#
# Example: the row `[+1, -1, 0, +1]` is the byte `0b01_00_10_01` = 73.
#
# Write `pack_ternary(t)` for `t` of shape `(..., d_in)` (int8 in {-1, 0, 1}), returning a
# `uint8` array of shape `(..., ceil(d_in / 4))`.

# %%
import numpy as np

from mmfree_ref.exercises import check_pack_ternary


# %%
def pack_ternary(t):
    """t: (..., d_in) int8 in {-1, 0, 1} -> packed (..., ceil(d_in / 4)) uint8."""
    # BEGIN SOLUTION
    d_in = t.shape[-1]
    pad = -d_in % 4
    t = np.concatenate([t, np.zeros(t.shape[:-1] + (pad,), t.dtype)], axis=-1)
    codes = np.where(t == 1, 1, np.where(t == -1, 2, 0)).astype(np.uint8)
    codes = codes.reshape(t.shape[:-1] + (-1, 4))                # (..., bytes, 4)
    return (codes[..., 0] | codes[..., 1] << 2 | codes[..., 2] << 4
            | codes[..., 3] << 6).astype(np.uint8)
    # END SOLUTION


# %%
check_pack_ternary(pack_ternary)

# %% [markdown]
# The example from the top: the row `[+1, -1, 0, +1]` is the byte `0b01_00_10_01` = 73.

# %%
example = pack_ternary(np.array([1, -1, 0, 1], np.int8))
print(example, format(int(example[0]), "08b"))
assert example.tolist() == [73], "codes 01, 10, 00, 01 from the lowest bits up"
