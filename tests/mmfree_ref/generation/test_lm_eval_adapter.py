"""generation/lm_eval_adapter.py through lm-evaluation-harness itself, offline, on local tasks.

The tasks are YAML files and JSON lines written to a tmp dir (the harness's `json` dataset
builder, HF_DATASETS_OFFLINE=1: nothing is downloaded). Every number the harness reports is
compared with one computed here independently: the oracle's full-sequence forward in float64.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from mmfree_ref.generation.evaluate import OracleScorer, evaluate_text, log_softmax
from mmfree_ref.generation.tokenizers import load_tokenizer
from mmfree_ref.model import forward
from tests.mmfree_ref.generation.published_fixture import make_published

pytest.importorskip("lm_eval", reason="lm-eval (the lm-eval extra) is not installed")

DOCS = [{"question": "The sky is", "choices": [" blue", " green", " loud"]},
        {"question": "Two plus two is ", "choices": ["four", "five"]},
        {"question": "Water is", "choices": [" wet", " dry", " élan 🙂"]}]
TEXTS = [{"text": "Hello world. The quick brown fox."}, {"text": "Ünïcödé 🙂 and\nnew lines"}]


@pytest.fixture(scope="module")
def offline(tmp_path_factory):
    """The harness and `datasets` offline, with their caches in a tmp dir."""
    cache = tmp_path_factory.mktemp("hf")
    env = {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "HF_HOME": str(cache),
           "HF_DATASETS_CACHE": str(cache / "datasets")}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        yield env


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("lmeval") / "ckpt"
    config, params = make_published(path, dtype="float64")
    return path, config, params


@pytest.fixture(scope="module")
def lm(ckpt, offline):
    from mmfree_ref.generation.lm_eval_adapter import MMfreeLM
    path, config, params = ckpt
    return MMfreeLM(OracleScorer(params, config), load_tokenizer(path, config), chunk=3)


def reference_logp(ckpt, ids):
    """log p(ids[t+1] | ids[:t+1]) for every t, from one float64 forward of the whole sequence."""
    _, config, params = ckpt
    lp = log_softmax(forward(params, config, np.asarray(ids)[None])[0])
    return lp[np.arange(len(ids) - 1), ids[1:]], np.argmax(lp, -1)[:-1] == ids[1:]


class Request:
    def __init__(self, *args):
        self.args = args


def test_context_spaces_move_to_the_continuation(lm):
    ctx, cont = lm.encode_pair("The sky is ", "blue")
    assert ctx.tolist() == lm.tokenizer.encode("The sky is").tolist()        # BOS in front
    assert cont.tolist() == lm.tokenizer.encode("The sky is blue", bos=False).tolist()[
        len(ctx) - 1:]


def test_loglikelihood_equals_the_full_forward(lm, ckpt):
    pairs = [(d["question"], c) for d in DOCS for c in d["choices"]] + [("", "Hello")]
    got = lm.loglikelihood([Request(*p) for p in pairs], disable_tqdm=True)
    for (context, continuation), (logp, greedy) in zip(pairs, got):
        ctx, cont = lm.encode_pair(context, continuation)
        ref, ref_greedy = reference_logp(ckpt, np.concatenate([ctx, cont]))
        # chunks of 3 with the state carried vs one forward: measured 0; another BLAS may move each
        # log p by test_evaluate's chunk bound (2e-15), and the <= 4-term sums add <= 3 u: 2.3e-15
        # (abs=0 here and below: without it pytest.approx also passes anything within 1e-12)
        assert logp == pytest.approx(ref[-len(cont):].sum(), rel=3e-15, abs=0)
        assert greedy == bool(ref_greedy[-len(cont):].all())


def write_task(folder, name, output_type, data, extra):
    data_file = folder / f"{name}.jsonl"
    data_file.write_text("\n".join(json.dumps(d, ensure_ascii=False) for d in data) + "\n")
    lines = [f"task: {name}", "dataset_path: json", "dataset_kwargs:", "  data_files:",
             f"    test: {data_file}", "test_split: test", f"output_type: {output_type}"]
    (folder / f"{name}.yaml").write_text("\n".join(lines + extra) + "\n")


@pytest.fixture(scope="module")
def tasks(tmp_path_factory, lm):
    folder = tmp_path_factory.mktemp("tasks")
    # answers: the model's own choice for the first two documents, another for the third, so
    # the harness must report acc 2/3 exactly (target_delimiter "": its requests are then
    # (question, choice) as here)
    docs = []
    for k, d in enumerate(DOCS):
        lls = [ll for ll, _ in lm.loglikelihood([Request(d["question"], c)
                                                 for c in d["choices"]], disable_tqdm=True)]
        best = int(np.argmax(lls))
        docs.append({**d, "answer": best if k < 2 else (best + 1) % len(d["choices"])})
    write_task(folder, "mmfree_tiny_mc", "multiple_choice", docs,
               ['doc_to_text: "{{question}}"', 'target_delimiter: ""',
                'doc_to_choice: "{{choices}}"',
                'doc_to_target: "{{answer}}"', "metric_list:", "  - metric: acc"])
    write_task(folder, "mmfree_tiny_ppl", "loglikelihood_rolling", TEXTS,
               ['doc_to_text: ""', 'doc_to_target: "{{text}}"', "metric_list:",
                "  - metric: bits_per_byte"])
    write_task(folder, "mmfree_tiny_gen", "generate_until", [{"q": "Say", "a": "x"}],
               ['doc_to_text: "{{q}}"', 'doc_to_target: "{{a}}"', "generation_kwargs:",
                "  until: []", "  max_gen_toks: 4", "  do_sample: false", "metric_list:",
                "  - metric: exact_match"])
    return folder


@pytest.fixture(scope="module")
def results(lm, tasks):
    """One run of the harness over the three local tasks (its built-in tasks not indexed)."""
    import lm_eval
    from lm_eval.tasks import TaskManager
    manager = TaskManager(include_path=str(tasks), include_defaults=False)
    return lm_eval.simple_evaluate(model=lm, tasks=["mmfree_tiny_mc", "mmfree_tiny_ppl",
                                                    "mmfree_tiny_gen"],
                                   bootstrap_iters=0, task_manager=manager)


def test_harness_multiple_choice_accuracy(results):
    # measured 0: the harness's mean is sum([1, 1, 0]) / 3, an exact sum rounded once, as 2 / 3
    assert results["results"]["mmfree_tiny_mc"]["acc,none"] == 2 / 3


def test_harness_bits_per_byte_equals_mmfree_eval(lm, results):
    """The harness's bits_per_byte of a single document is -ll / (bytes ln 2): evaluate_text's
    definition; both run the same scorer, the sums in another order."""
    nll = sum(evaluate_text(lm.scorer, lm.tokenizer, d["text"]).nll for d in TEXTS)
    n_bytes = sum(len(d["text"].encode()) for d in TEXTS)
    # measured 1.8e-16 (one ulp), all from -(sum ll / sum bytes) / ln 2 vs nll / (bytes ln 2):
    # 3 u each side; chunks of 3 vs whole may move each nll by 2e-15 (test_evaluate): 2.7e-15
    assert results["results"]["mmfree_tiny_ppl"]["bits_per_byte,none"] == pytest.approx(
        nll / (n_bytes * np.log(2)), rel=3e-15, abs=0)


def test_harness_generate_until_is_greedy(lm, results, ckpt):
    [sample] = results["samples"]["mmfree_tiny_gen"]
    assert sample["resps"][0][0] == greedy_reference(lm, ckpt, "Say", 4)


def greedy_reference(lm, ckpt, context, n):
    """Greedy continuation by full forwards of the growing sequence, decoded after the context."""
    _, config, params = ckpt
    ids = lm.tokenizer.encode(context).tolist()
    start = len(ids)
    for _ in range(n):
        nxt = int(np.argmax(forward(params, config, np.array([ids]))[0, -1]))
        if nxt == lm.tokenizer.eos_id:
            break
        ids.append(nxt)
    tok = lm.tokenizer
    return tok.decode(ids)[len(tok.decode(ids[:start])):]


def test_greedy_stops_at_the_first_until_string(lm, ckpt):
    full = lm.greedy("The sky is", {"max_gen_toks": 6})
    assert full == greedy_reference(lm, ckpt, "The sky is", 6) and len(full) >= 4
    stop = full[2:4]
    assert lm.greedy("The sky is", {"max_gen_toks": 6, "until": [stop, "\x00never"]}) == \
        full[:full.index(stop)]
    with pytest.raises(ValueError, match="greedily only"):
        lm.greedy("x", {"do_sample": True})


def test_python_m_runs_lm_eval_with_the_model_registered(ckpt, tasks, offline, tmp_path):
    path = ckpt[0]
    cmd = [sys.executable, "-m", "mmfree_ref.generation.lm_eval_adapter", "--model", "mmfree",
           "--model_args", f"ckpt={path},dtype=float64,chunk=4", "--tasks", "mmfree_tiny_mc",
           "--include_path", str(tasks), "--output_path", str(tmp_path / "out")]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **offline},
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "mmfree_tiny_mc" in done.stdout and "0.6667" in done.stdout, done.stdout[-2000:]
