"""Text generation with the recurrent state: prefill the prompt once, then one step per token.

No recomputation of the prefix: after the prefill the only memory is the per-layer state h
(B, D). A decoder is any object with
    prefill(ids (B, T) int) -> logits (B, V) of the last position   (and keeps the state)
    step(ids_t (B,) int)    -> logits (B, V)                         (and advances the state)
`OracleDecoder` is the NumPy one; gpu/ provides one with the same two methods, registered in the
"mmfree.decoders" entry-point group.
"""
import numpy as np

from mmfree_ref._plugins import find_factory
from mmfree_ref.decode import decode_step
from mmfree_ref.generation.sampling import sample_next
from mmfree_ref.model import check_ids, forward_with_cache


class OracleDecoder:
    """The NumPy decoder: the oracle's forward for the prefill, decode_step afterwards."""

    def __init__(self, params, config):
        self.params, self.config, self.state = params, config, None

    def prefill(self, ids):
        logits, self.state, _ = forward_with_cache(self.params, self.config, ids)
        return logits[:, -1]

    def step(self, ids_t):
        logits, self.state = decode_step(self.params, self.config, np.asarray(ids_t), self.state)
        return logits


def decoder_factory(device):
    """device "oracle" -> OracleDecoder; any other name ("cpu": cpu/, "gpu": gpu/) is looked up
    in "mmfree.decoders". A factory takes (params, config); one that also has from_packed
    (PackedModel) can be fed the packed weights without a float copy of the model."""
    return find_factory("mmfree.decoders", device, {"oracle": OracleDecoder},
                        "decoder for device")


def make_decoder(device, params, config):
    """device name (decoder_factory) -> a decoder on these float params."""
    return decoder_factory(device)(params, config)


def generate(decoder, config, prompt_ids, max_new_tokens, rng, temperature=1.0, top_k=None,
             top_p=None, stop_at_eos=True, on_token=None):
    """prompt_ids: (T,) int -> new ids (N,) int64 with N <= max_new_tokens.

    on_token(id) is called as each token is produced (for streaming). Generation stops early at
    config.eos_token_id when stop_at_eos.
    """
    prompt = check_ids(np.asarray(prompt_ids)[None], config)
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    out = []
    logits = decoder.prefill(prompt)
    for _ in range(max_new_tokens):
        nxt = int(sample_next(logits[0], rng, temperature, top_k, top_p))
        out.append(nxt)
        if on_token is not None:
            on_token(nxt)
        if stop_at_eos and nxt == config.eos_token_id:
            break
        logits = decoder.step(np.array([nxt]))
    return np.array(out, dtype=np.int64)
