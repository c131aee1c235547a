"""An EleutherAI lm-evaluation-harness model for mmfree checkpoints (the `lm-eval` extra).

The paper's zero-shot table (ARC-e, ARC-c, HellaSwag, OpenbookQA, PIQA, Winogrande), with
internet for the datasets:

    python -m mmfree_ref.generation.lm_eval_adapter --model mmfree \\
        --model_args ckpt=PATH/MMfreeLM-370M,engine=oracle,dtype=float32 \\
        --tasks arc_easy,arc_challenge,hellaswag,openbookqa,piqa,winogrande

`python -m` of this module registers the model name "mmfree" and then runs lm_eval's own
command line with the same arguments (the plain `lm_eval` command knows only its own models).
From Python: lm_eval.simple_evaluate(model=MMfreeLM.from_checkpoint(PATH), tasks=[...]).

The three requests of lm_eval.api.model.LM, on a scorer (evaluate.py) and the checkpoint's
tokenizer (tokenizers.py), one request at a time (batch_size does not change any number):
- loglikelihood (context, continuation): log p(continuation | BOS, context) and whether greedy
  decoding would produce it. As the harness's own HF model, the context's trailing spaces move
  to the continuation, and the continuation's tokens are those of encode(context +
  continuation) after encode(context)'s.
- loglikelihood_rolling (text,): log p(text | BOS), every token scored once, with the whole
  text as context: a recurrent model needs no rolling windows.
- generate_until (context, gen_kwargs): greedy only; stops at EOS, at max_gen_toks, or at the
  first "until" string (cut off); returns the text that follows the context.
add_bos: BOS before every context, as the authors' tokenizer does (default); add_bos=False
puts it only before an empty context, as the harness's HF model does by default.
"""
import sys

import numpy as np
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from lm_eval.utils import simple_parse_args_string
from tqdm import tqdm

from mmfree_ref.config import HGRNBitConfig
from mmfree_ref.formats.checkpoint import load_checkpoint
from mmfree_ref.generation.evaluate import log_softmax, make_scorer, score_tokens
from mmfree_ref.generation.tokenizers import load_tokenizer


def _flag(value):
    """model_args arrive as text ("False") or as Python values."""
    if isinstance(value, str):
        if value.lower() not in ("true", "false"):
            raise ValueError(f"expected true or false, got {value!r}")
        return value.lower() == "true"
    return bool(value)


@register_model("mmfree")
class MMfreeLM(LM):
    """scorer: reset() and logits_all(ids (1, T)) (evaluate.py); tokenizer: tokenizers.py."""

    def __init__(self, scorer, tokenizer, chunk=128, max_gen_toks=256, add_bos=True):
        super().__init__()
        self.scorer, self.tokenizer = scorer, tokenizer
        self.chunk, self.max_gen_toks, self.add_bos = int(chunk), int(max_gen_toks), add_bos

    @classmethod
    def from_checkpoint(cls, ckpt, engine="oracle", dtype="float32", chunk=128,
                        max_gen_toks=256, add_bos=True, batch_size=None, max_batch_size=None,
                        device=None):
        """ckpt: a checkpoint directory; engine: "oracle" or a decoder's device name
        (evaluate.make_scorer). The harness's own batch_size, max_batch_size and device (a torch
        device, "cuda:0" by default) are accepted and have no effect here."""
        tokenizer = load_tokenizer(ckpt, HGRNBitConfig.load(ckpt))
        config, params = load_checkpoint(ckpt, dtype=np.dtype(dtype))
        return cls(make_scorer(engine, params, config), tokenizer, int(chunk),
                   int(max_gen_toks), _flag(add_bos))

    @classmethod
    def create_from_arg_string(cls, arg_string, additional_config=None):
        return cls.create_from_arg_obj(simple_parse_args_string(arg_string), additional_config)

    @classmethod
    def create_from_arg_obj(cls, arg_dict, additional_config=None):
        extra = {k: v for k, v in (additional_config or {}).items() if v is not None}
        if "ckpt" not in arg_dict:
            raise ValueError("model_args must name the checkpoint: ckpt=PATH")
        return cls.from_checkpoint(**arg_dict, **extra)

    # ------------------------------------------------------------------------- encoding

    def _encode(self, text):
        return self.tokenizer.encode(text, bos=False, eos=False)

    def _context_ids(self, ctx):
        """(t,) context ids -> (1 + t,) or (t,): with BOS in front when due."""
        if self.add_bos or len(ctx) == 0:
            return np.concatenate([[self.tokenizer.bos_id], ctx]).astype(np.int64)
        return ctx

    def encode_pair(self, context, continuation):
        """-> (context ids with BOS as due, continuation ids), as the harness's HF model."""
        spaces = len(context) - len(context.rstrip())
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        whole, ctx = self._encode(context + continuation), self._encode(context)
        return self._context_ids(ctx), whole[len(ctx):]

    # ------------------------------------------------------------------------- requests

    def loglikelihood(self, requests, disable_tqdm=False):
        out = []
        for req in tqdm(requests, desc="loglikelihood", disable=disable_tqdm):
            ctx, cont = self.encode_pair(*req.args)
            if len(cont) == 0:
                out.append((0.0, True))
                continue
            logp, greedy = score_tokens(self.scorer, np.concatenate([ctx, cont]), self.chunk)
            out.append((float(logp[-len(cont):].sum()), bool(greedy[-len(cont):].all())))
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm=False):
        out = []
        for req in tqdm(requests, desc="loglikelihood_rolling", disable=disable_tqdm):
            ids = self._context_ids(np.array([], np.int64))
            ids = np.concatenate([ids, self._encode(req.args[0])])
            out.append(float(score_tokens(self.scorer, ids, self.chunk)[0].sum())
                       if len(ids) > 1 else 0.0)
        return out

    def generate_until(self, requests, disable_tqdm=False):
        return [self.greedy(*req.args)
                for req in tqdm(requests, desc="generate_until", disable=disable_tqdm)]

    def greedy(self, context, gen_kwargs):
        """context: str, gen_kwargs {"until", "max_gen_toks", ...} -> the continuation text."""
        gen_kwargs = dict(gen_kwargs or {})
        if _flag(gen_kwargs.get("do_sample", False)) or gen_kwargs.get("temperature", 0) != 0:
            raise ValueError("the mmfree lm-eval model generates greedily only "
                             f"(do_sample false, temperature 0), got {gen_kwargs}")
        until = gen_kwargs.get("until") or []
        until = [until] if isinstance(until, str) else list(until)
        ctx = self._context_ids(self._encode(context))
        stream = self.tokenizer.stream(prefix=ctx)      # the text that follows the context
        logits, text = self._prefill(ctx), ""
        for _ in range(int(gen_kwargs.get("max_gen_toks", self.max_gen_toks))):
            nxt = int(np.argmax(log_softmax(logits)))
            if nxt == self.tokenizer.eos_id:
                break
            text += stream.feed(nxt)
            if any(u in text for u in until):
                break
            logits = self.scorer.logits_all(np.array([[nxt]]))[0, -1]
        text += stream.flush()
        cut = [text.index(u) for u in until if u in text]
        return text[:min(cut)] if cut else text

    def _prefill(self, ids):
        """ids: (T,) -> logits (V,) after the last, the scorer fed in chunks from a reset."""
        self.scorer.reset()
        for start in range(0, len(ids), self.chunk):
            logits = self.scorer.logits_all(ids[None, start:start + self.chunk])
        return logits[0, -1]


def main(argv=None):
    """`python -m mmfree_ref.generation.lm_eval_adapter ARGS`: lm_eval's CLI, "mmfree" known."""
    from lm_eval.__main__ import cli_evaluate
    if argv is not None:
        sys.argv = [sys.argv[0]] + list(argv)
    cli_evaluate()


if __name__ == "__main__":
    main()
