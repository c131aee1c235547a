# %% [markdown]
# # 10. Run the published 370M on your laptop
#
# The authors published three trained MatMul-free models on the Hugging Face hub:
# `ridger/MMfreeLM-370M`, `-1.3B` and `-2.7B`. Each is a directory in the layout of their code
# (ridgerchu/matmulfreellm): `config.json`, the weights in BF16 safetensors (the 2.7B in two
# shards with `model.safetensors.index.json`), and the Mistral 32k SentencePiece tokenizer as
# `tokenizer.model` and `tokenizer.json`. This notebook loads one with this package alone (no
# PyTorch), packs its ternary weights, encodes a prompt, generates, and measures perplexity.
#
# **With the real checkpoint.** Download it once (for example
# `huggingface-cli download ridger/MMfreeLM-370M --local-dir ~/models/MMfreeLM-370M`) and either
# leave it at `~/models/MMfreeLM-370M` or point the environment variable `MMFREE_370M` at its
# directory. **Without it** (as in CI, which has no network) the notebook builds a stand-in:
# the published files and tokenizer, but random weights and a narrow width (64 instead of 1024,
# 2 layers instead of 24), so that it runs in seconds. Every number below is then that of a
# model that has learned nothing, and the notebook says so where it matters.

# %%
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from mmfree_ref.config import HGRNBitConfig, preset
from mmfree_ref.formats.checkpoint import load_checkpoint, save_checkpoint
from mmfree_ref.formats.packed import packed_sizes
from mmfree_ref.formats.published import CACHE, load_published
from mmfree_ref.generation.evaluate import OracleScorer, evaluate_text, score_tokens
from mmfree_ref.generation.generate import OracleDecoder, generate
from mmfree_ref.generation.tokenizers import load_tokenizer
from mmfree_ref.params import init_params

start = time.perf_counter()


def find_checkpoint():
    """The real 370M if the user has it, else None."""
    for candidate in (os.environ.get("MMFREE_370M"), "~/models/MMfreeLM-370M"):
        if candidate and (Path(candidate).expanduser() / "config.json").is_file():
            return Path(candidate).expanduser()
    return None


def write_stand_in(directory):
    """Random BF16 weights in the published layout, with the Mistral v1 tokenizer that the
    mistral-common package ships (the same file as MMfreeLM's tokenizer.model)."""
    import importlib.util
    spec = importlib.util.find_spec("mistral_common")
    if spec is None:
        raise RuntimeError("the stand-in borrows its tokenizer from mistral-common: "
                           "pip install mistral-common (or set MMFREE_370M)")
    config = HGRNBitConfig(vocab_size=32000, hidden_size=64, num_hidden_layers=2)
    save_checkpoint(directory, config, init_params(config, seed=0), dtype="bfloat16",
                    max_shard_bytes=2_000_000)
    shutil.copyfile(Path(spec.origin).parent / "data" / "tokenizer.model.v1",
                    directory / "tokenizer.model")
    (directory / "tokenizer_config.json").write_text(json.dumps(
        {"add_bos_token": True, "add_eos_token": False, "bos_token": "<s>",
         "eos_token": "</s>", "unk_token": "<unk>", "tokenizer_class": "LlamaTokenizer"}))


ckpt = find_checkpoint()
REAL = ckpt is not None
if not REAL:
    ckpt = Path(tempfile.mkdtemp()) / "MMfreeLM-370M-stand-in"
    write_stand_in(ckpt)
files = sorted(p.name for p in ckpt.iterdir())
print("checkpoint:", ckpt, "(the real 370M)" if REAL else "(random stand-in)")
print(files)
assert {"config.json", "tokenizer.model"} <= set(files)
assert "model.safetensors" in files or "model.safetensors.index.json" in files

# %% [markdown]
# ## The weights: BF16 on disk, 2 bits in memory
#
# Every BitLinear matrix $W$ enters the model only as $\hat W = T / s$ with ternary codes
# $T \in \{-1, 0, +1\}$ and one scale $s$ per matrix (notebook 1). `load_published` reads the
# checkpoint one tensor at a time, ternarizes each BitLinear weight in float32 exactly as the
# oracle's `absmean_ternary` does, packs the codes four to a byte, and frees the float copy: the
# whole model never exists in float64 (21.6 GB for the 2.7B) or even in float32. The packed
# model is then cached beside the checkpoint (`.mmfree-packed-v1.safetensors`), so the next
# load reads 2-bit codes directly; a cache whose source files changed is rebuilt, never used.

# %%
t0 = time.perf_counter()
model = load_published(ckpt, progress=False)
first = time.perf_counter() - t0
t0 = time.perf_counter()
model = load_published(ckpt, progress=False)
again = time.perf_counter() - t0
config = model.config
assert (ckpt / CACHE).is_file()
in_memory = (sum(w.packed.nbytes for w in model.ternary.values())
             + sum(x.nbytes for x in model.floats.values()))
n_ternary = sum(w.packed.shape[0] * w.d_in for w in model.ternary.values())
# four ternary weights per byte (rows padded to a multiple of 4)
assert all(w.packed.shape[1] == -(-w.d_in // 4) for w in model.ternary.values())
print(f"packed in {first:.1f} s, reloaded from the cache in {again:.2f} s: "
      f"{n_ternary / 1e6:.1f} M ternary weights in {in_memory / 1e6:.1f} MB")

# %% [markdown]
# What the real 370M takes, from its shapes alone (`packed_sizes`): the BF16 files, the float64
# copy the oracle's `load_checkpoint` would make, and the packed model a fast engine loads.

# %%
real = preset("370M")
sizes = packed_sizes(real)
n_params = sizes["model_float32"] // 4
table = {"BF16 files": 2 * n_params, "float64 (the oracle)": 8 * n_params,
         "packed (2-bit + float32 embeddings)": sizes["export"]}
for name, nbytes in table.items():
    print(f"{name:38s} {nbytes / 1e9:6.2f} GB")
assert table["packed (2-bit + float32 embeddings)"] < table["BF16 files"] / 2

# %% [markdown]
# ## The tokenizer
#
# `load_tokenizer` reads `tokenizer.model` with `sentencepiece` (or `tokenizer.json` with
# `tokenizers`) and follows the authors' `generate.py`: BOS (id 1) in front of every prompt, no
# EOS (id 2); the space before a word is part of its piece (`▁world`), and a character without a
# piece of its own is spelled in UTF-8 bytes (`<0xE2>`...), which a stream prints only once the
# character is complete.

# %%
tok = load_tokenizer(ckpt, config)
prompt = "In a shocking finding, scientists discovered a herd of unicorns"
ids = tok.encode(prompt)
print([tok.pieces[i] for i in ids[:8]], "...")
assert ids[0] == tok.bos_id == 1 and tok.decode(ids) == prompt
spelled = tok.encode("Ⅳ", bos=False)
print("Ⅳ ->", [tok.pieces[i] for i in spelled])
stream = tok.stream()
printed = [stream.feed(i) for i in spelled]
assert printed[-1] == "Ⅳ" and not any(printed[:-1])     # nothing half-printed

# %% [markdown]
# ## Generating
#
# The decoder here is the NumPy oracle, `OracleDecoder`, which every install has; it reads the
# float weights (`load_checkpoint` in float32, exact for BF16) and runs the prompt through the
# full-sequence forward, then one step per token with the MLGRU state. The Numba CPU engine,
# `cpu.decoder.CPUDecoder.from_packed(model)` (what `mmfree generate` uses by default), has the
# same `prefill` and `step` and runs the packed weights above at reading speed.

# %%
_, params = load_checkpoint(ckpt, dtype=np.float32)
decoder = OracleDecoder(params, config)
stream, pieces = tok.stream(prefix=ids), []     # the text that follows the prompt's


def show(token):
    pieces.append(stream.feed(token))


t0 = time.perf_counter()
new = generate(decoder, config, ids, max_new_tokens=12 if REAL else 20,
               rng=np.random.default_rng(0), temperature=0.6, top_p=0.4, on_token=show)
seconds = time.perf_counter() - t0
text = "".join(pieces) + stream.flush()
print(prompt + text)
print(f"{len(new)} tokens in {seconds:.1f} s")
assert text == tok.decode(np.concatenate([ids, new]))[len(prompt):]

# %% [markdown]
# ## Perplexity and bits per byte
#
# `evaluate_text` scores every token of a text given BOS and the tokens before it
# (`mmfree eval CKPT --text FILE` from the command line). A model that has learned nothing
# predicts each of the 32000 tokens with probability 1/32000: $\log_2 32000 = 15$ bits per
# token. The stand-in's random weights sit right there; a trained model needs far fewer, below
# half of that.

# %%
paragraph = ("The MatMul-free language model replaces every dense layer by a ternary one, so "
             "that its products need only additions and subtractions. Its token mixer is a "
             "gated recurrence whose state has one vector per layer, whatever the length of "
             "the context.")
scorer = OracleScorer(params, config)
score = evaluate_text(scorer, tok, paragraph, chunk=64)
logp, _ = score_tokens(scorer, tok.encode(paragraph, bos=True), chunk=64)
uniform = np.log2(config.vocab_size)
print(f"{score.tokens} tokens, perplexity {score.perplexity:.1f}, "
      f"{score.bits_per_token:.2f} bits per token, {score.bits_per_byte:.3f} bits per byte")
if REAL:
    assert score.bits_per_token < uniform / 2
else:
    assert abs(score.bits_per_token - uniform) < 0.5

fig, ax = plt.subplots(figsize=(10, 3.4))
ax.plot(-logp / np.log(2), ".-", label="this model")
ax.axhline(uniform, color="gray", ls="--", label=f"uniform over {config.vocab_size}")
ax.set(xlabel="token of the paragraph", ylabel="bits (surprisal)", ylim=(0, 1.15 * uniform),
       title=("the real 370M" if REAL else "random stand-in") + ": surprisal of each token")
ax.legend()
plt.tight_layout()
plt.show()

# %%
if not REAL:
    shutil.rmtree(ckpt.parent)      # the stand-in and its packed cache
print(f"notebook ran in {time.perf_counter() - start:.0f} s")
