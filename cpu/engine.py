"""The CPU decoder as a crosscheck engine (mmfree_ref/equivalence/steps.py).

    mmfree crosscheck CKPT --ids IDS.npy --engines oracle,cpu

CPUSteps runs one CPUDecoder.step from the state it is given (cast to float32) and records every
BitLinear's quantization as the oracle's trace.Site, in the oracle's site order (per layer i, f,
g, o, gate, down, then lm_head: the order the decoder quantizes in): x the BitLinear's input as
the decoder computed it (float32), the norm weight, v the pre-rounding values and q the codes of
quantize.rmsnorm_absmax_int8 (the very values the GEMV then used), scale its absmax scale.
unit_roundoff is float32's: every float operation of the decoder is one float32 rounding, the
mean squares are summed in float64 (quantize.py).
"""
import numpy as np

from mmfree_ref.equivalence.trace import Site

from cpu.decoder import CPUDecoder

F32 = np.float32


class CPUSteps:
    """Engine "cpu" of "mmfree.engines": CPUDecoder(params, config) step by step."""
    name = "cpu"
    unit_roundoff = 2.0 ** -24

    def __init__(self, params, config, **decoder_options):
        self.dec = CPUDecoder(params, config, **decoder_options)

    def step(self, ids_t, state):
        """ids_t (B,) int, state [L x (B, D)] -> logits (B, V) float32, state [L x (B, D)]
        float32, sites [trace.Site] with (B, d_in) arrays, scale (B, 1)."""
        sites = []

        def on_site(x, norm_w, q, scale, v):
            sites.append(Site(x.copy(), norm_w.copy(), v.copy(), q.copy(), scale[:, None].copy()))

        self.dec.state = [np.array(h, F32) for h in state]
        logits = self.dec.step(ids_t, on_site=on_site)
        return logits, [h.copy() for h in self.dec.state], sites
