"""The FPGA datapath as a decoding engine of `mmfree crosscheck` (mmfree_ref/equivalence/steps.py).

    mmfree crosscheck ckpt/ --ids ids.npy --engines oracle,fpga

The Program is built from pack_params(config, float64 params): the ROMs hold the oracle's own
ternary codes (absmean in float64), so every difference left is the datapath's activation
quantizer (block floating point, quant_error_bound) and its float32 row-wise unit. A step runs
token_step (batch 1) for each sequence from the oracle's state cast to float32 and stacks the
sites it records over the batch.
"""
import numpy as np

from mmfree_ref.equivalence.trace import Site
from mmfree_ref.formats.packed import pack_params
from fpga_model.datapath import F32, load_program, token_step


class FPGASteps:
    """A step engine (steps.py's interface) over fpga_model.datapath.token_step."""
    name = "fpga"
    unit_roundoff = 2.0 ** -24      # the row-wise unit is float32

    def __init__(self, params, config, lanes=64):
        params = {k: np.asarray(v, np.float64) for k, v in params.items()}
        self.prog, self.config, self.lanes = load_program(pack_params(config, params)), config, lanes

    def step(self, ids_t, state):
        """ids_t (B,) int, state [L x (B, D) float64] -> logits (B, V) float32,
        state [L x (B, D) float32], sites [trace.Site] with (B, d) arrays, site_names order."""
        logits, states, sites = [], [], []
        for b, token in enumerate(ids_t):
            seq_sites = []
            out, new = token_step(self.prog, int(token), [h[b].astype(F32) for h in state],
                                  self.lanes, seq_sites)
            logits.append(out)
            states.append(new)
            sites.append(seq_sites)
        new_state = [np.stack([s[i] for s in states]) for i in range(len(state))]
        return np.stack(logits), new_state, [stack_sites(per_b) for per_b in zip(*sites)]


def stack_sites(per_b):
    """One site's records of the B sequences -> one Site of (B, d) arrays, scale (B, 1)."""
    def stack(field):
        return np.stack([getattr(s, field) for s in per_b])
    return Site(stack("x"), per_b[0].norm_w, stack("v"), stack("q"), stack("scale"),
                stack("slack"))
