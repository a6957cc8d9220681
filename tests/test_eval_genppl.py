"""`edlm eval samples` with the exact evaluators: `true` (synthetic language) and an edlm AR run; the CLI
JSON line; one clear error for each kind of bad input; the windows, and the cut at the first EOS id."""

import itertools
import json
import math

import pytest
import torch

from edlm.api.evaluators import evaluate_rows, get_evaluator
from edlm.cli import main
from edlm.errors import EdlmError
from edlm.eval import scoring
from edlm.eval.evaluators import EdlmAREvaluator, TrueEvaluator
from edlm.eval.genppl import read_samples
from edlm.eval.scoring import windows

KEYS = (
    "evaluator",
    "num",
    "gen_ppl",
    "gen_nll",
    "entropy_nats",
    "entropy_bits",
    "distinct_1",
    "distinct_2",
    "distinct_3",
    "distinct_4",
    "seconds_per_sample",
    "tokens_per_second",
    "method",
    "steps",
    "k",
)


def rows_of(x, **extra):
    base = {
        "text": "",
        "seconds": 0.5,
        "method": "mdlm",
        "steps": 8,
        "k": 0,
        "window": None,
        "corpus": "synthetic",
        "seed": 0,
    }
    return [{**base, "ids": r, **extra} for r in x.tolist()]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def lang_samples(synthetic_data):
    from edlm.data.synthetic import load_language

    lang = load_language()
    x = lang.sample(48, 64, generator=torch.Generator().manual_seed(0))
    return lang, x


def test_true_evaluator_matches_block_entropy_and_punishes_shuffling(lang_samples):
    lang, x = lang_samples
    res = evaluate_rows(rows_of(x), "true")
    assert res["evaluator"] == "true" and res["num"] == 48 and res["tokens_scored"] == 48 * 64
    # exact samples: the mean NLL per token estimates the block entropy (~1.03 nats here)
    assert res["gen_nll"] == pytest.approx(lang.block_entropy(64), abs=0.06)
    assert res["gen_ppl"] == pytest.approx(math.exp(res["gen_nll"]))
    direct = -lang.log_prob(x).sum().item() / x.numel()
    assert res["gen_nll"] == pytest.approx(direct, rel=1e-9)
    # shuffling positions keeps every sample's histogram (same entropy) but breaks the chain
    g = torch.Generator().manual_seed(1)
    shuf = torch.stack([r[torch.randperm(64, generator=g)] for r in x])
    bad = evaluate_rows(rows_of(shuf), "true")
    assert bad["entropy_nats"] == pytest.approx(res["entropy_nats"])
    assert bad["gen_nll"] > res["gen_nll"] + 1.0 and bad["gen_ppl"] > 2.5 * res["gen_ppl"]


def test_token_weighted_ppl_and_per_sample_nll(lang_samples):
    lang, x = lang_samples
    rows = rows_of(x[:2, :8]) + rows_of(x[2:3, :32])  # different lengths in one file
    res = evaluate_rows(rows, "true")
    nll = [-lang.log_prob(torch.tensor([r["ids"]])).item() for r in rows]
    lens = [8, 8, 32]
    assert res["gen_nll"] == pytest.approx(sum(nll) / sum(lens))
    assert res["nll_per_sample"] == pytest.approx(sum(a / n for a, n in zip(nll, lens, strict=True)) / 3)
    assert res["tokens_per_second"] == pytest.approx(48 / 1.5)
    # --max-tokens scores only the first N tokens of each sample
    cut = evaluate_rows(rows, "true", max_tokens=4)
    assert cut["tokens_scored"] == 12
    # the exact language has no EOS and no context limit
    assert (res["eos"], res["samples_cut_at_eos"], res["stride"], res["samples_windowed"]) == ("mdlm", 0, None, 0)


def test_evaluator_is_cached(synthetic_data):
    a = get_evaluator("true")
    assert isinstance(a, TrueEvaluator) and get_evaluator("true") is a
    assert evaluate_rows([{"ids": [0, 1, 2], "corpus": "synthetic"}], a)["num"] == 1


def save_tiny_ar_run(run, seed=0):
    """A randomly initialised AR run written with edlm's own checkpoint code."""
    from edlm.config.model import TransformerConfig
    from edlm.data.corpora import manifest
    from edlm.models.transformer import Transformer
    from edlm.runs.checkpoint import save_checkpoint
    from edlm.utils import atomic_write_json

    man = manifest("synthetic")
    torch.manual_seed(seed)
    cfg = TransformerConfig(
        vocab_size=man["mask_id"] + 1,
        out_vocab=man["mask_id"] + 1,
        n_layers=2,
        d_model=32,
        n_heads=2,
        cond_dim=16,
        max_len=32,
        causal=True,
    )
    model = Transformer(cfg).eval()
    atomic_write_json(
        run / "run.json",
        {
            "objective": "ar",
            "data": "synthetic",
            "mask_id": man["mask_id"],
            "vocab_size": man["vocab_size"],
            "tokenizer": man.get("tokenizer"),
            "model": cfg.to_dict(),
            "train": {"seq_len": 32},
        },
    )
    save_checkpoint(run, 1, model, None, None, {})
    return model, man["mask_id"]


def test_edlm_ar_run_scores_exactly_in_token_space(lang_samples, tmp_path):
    _, x = lang_samples
    model, bos = save_tiny_ar_run(tmp_path / "ar")
    x = x[:6, :24]
    rows = rows_of(x)
    for name in (f"edlm:{tmp_path / 'ar'}", str(tmp_path / "ar")):
        res = evaluate_rows(rows, name, batch_size=4)
        with torch.no_grad():
            inp = torch.cat([torch.full((6, 1), bos), x[:, :-1]], 1)
            lp = torch.log_softmax(model(inp)[..., :bos].double(), -1).gather(-1, x[..., None]).sum()
        assert res["tokens_scored"] == 6 * 24
        assert res["gen_nll"] == pytest.approx(-lp.item() / (6 * 24), rel=1e-5)
        assert res["evaluator"].startswith("edlm:") and res["evaluator_space"] == "ids"
    assert isinstance(get_evaluator(str(tmp_path / "ar")), EdlmAREvaluator)
    with pytest.raises(EdlmError, match="outside the vocabulary"):
        evaluate_rows([{"ids": [0, bos], "corpus": "synthetic"}], f"edlm:{tmp_path / 'ar'}")
    with pytest.raises(EdlmError, match="trained on 'synthetic'"):
        evaluate_rows([{"ids": [0, 1], "corpus": "wiki-char"}], f"edlm:{tmp_path / 'ar'}")


def ar_window_nll(model, bos, x, b, e, s):
    """Summed NLL of ids s..e-1 of each row of x when the AR reads BOS + x[b:e-1] (one pass), by hand."""
    w = x[:, b:e]
    inp = torch.cat([torch.full((len(x), 1), bos), w[:, :-1]], 1)
    with torch.no_grad():
        lp = torch.log_softmax(model(inp)[..., :bos].double(), -1).gather(-1, w[..., None])[..., 0]
    return -lp[:, s - b :].sum(-1)


def test_edlm_ar_scores_long_samples_in_windows(lang_samples, tmp_path):
    """max_len 32: a 64-id sample is scored on all 64 ids (it used to be cut to 32), window by window, each
    window read after the BOS as a training chunk is."""
    model, bos = save_tiny_ar_run(tmp_path / "ar")
    x = lang_samples[1][:3, :64]
    for stride, spans in {
        10: [(0, 32, 0), (10, 42, 32), (20, 52, 42), (30, 62, 52), (32, 64, 62)],
        None: [(0, 32, 0), (16, 48, 32), (32, 64, 48)],  # default: half the context
        31: [(0, 32, 0), (31, 63, 32), (32, 64, 63)],  # context - 1: one id of context (+ the BOS)
    }.items():
        res = evaluate_rows(rows_of(x), f"edlm:{tmp_path / 'ar'}", stride=stride)
        want = sum(ar_window_nll(model, bos, x, *w) for w in spans)
        assert res["tokens_scored"] == 3 * 64 and res["samples_windowed"] == 3
        assert res["stride"] == (stride or 16) and res["evaluator_context"] == 32
        assert res["nll_per_sequence"] == pytest.approx(want.mean().item(), rel=1e-5)
    with pytest.raises(EdlmError, match="`stride` 32 must be between 1 and 31"):
        evaluate_rows(rows_of(x), f"edlm:{tmp_path / 'ar'}", stride=32)


def test_edlm_ar_cuts_each_sample_after_its_first_eos_id(lang_samples, tmp_path, monkeypatch):
    model, bos = save_tiny_ar_run(tmp_path / "ar")
    eos = 5  # synthetic has no EOS: give its tokenizer one for this test
    monkeypatch.setattr(scoring, "corpus_eos", lambda c: (eos, None) if c == "synthetic" else (None, None))
    x = lang_samples[1][:3, :24].clone()
    x[x == eos] = 6
    x[0, 10] = x[0, 15] = eos  # scored: ids 0..10, the first EOS included
    x[1, 0] = eos  # scored: the EOS alone
    rows = rows_of(x)
    res = evaluate_rows(rows, f"edlm:{tmp_path / 'ar'}", eos="first")
    want = sum(ar_window_nll(model, bos, x[i : i + 1, :n], 0, n, 0).item() for i, n in enumerate((11, 1, 24)))
    assert res["tokens_scored"] == 11 + 1 + 24 and (res["eos"], res["samples_cut_at_eos"]) == ("first", 2)
    assert res["gen_nll"] == pytest.approx(want / 36, rel=1e-5)
    assert rows[0]["ids"] == x[0].tolist()  # the caller's rows are not modified
    assert res["distinct_1"] == evaluate_rows(rows, "true")["distinct_1"]  # stats see the whole samples
    old = evaluate_rows(rows, f"edlm:{tmp_path / 'ar'}", eos="all")
    assert old["tokens_scored"] == 72 and old["samples_cut_at_eos"] == 0
    assert old["gen_nll"] == pytest.approx(ar_window_nll(model, bos, x, 0, 24, 0).sum().item() / 72, rel=1e-5)
    # MDLM's mask: every id is scored but the EOS after a first one (x[0, 15])
    mdlm = evaluate_rows(rows, f"edlm:{tmp_path / 'ar'}", eos="mdlm")
    skip = -ar_window_nll(model, bos, x[:1], 15, 16, 15).item()  # -log p of x[0, 15] given x[0, :15]
    assert (mdlm["tokens_scored"], mdlm["eos_tokens_skipped"], mdlm["samples_cut_at_eos"]) == (71, 1, 0)
    assert mdlm["gen_nll"] == pytest.approx((old["gen_nll"] * 72 + skip) / 71, rel=1e-5)


def test_edlm_ar_mdlm_mask_and_windows_compose(lang_samples, tmp_path, monkeypatch):
    model, bos = save_tiny_ar_run(tmp_path / "ar")
    monkeypatch.setattr(scoring, "corpus_eos", lambda c: (5, None))
    x = lang_samples[1][:1, :64].clone()
    x[x == 5] = 6
    x[0, [5, 20, 40]] = 5
    per = {}  # position -> NLL, from the window that scores it (default stride 16)
    for b, e, s in [(0, 32, 0), (16, 48, 32), (32, 64, 48)]:
        w = x[:, b:e]
        inp = torch.cat([torch.full((1, 1), bos), w[:, :-1]], 1)
        with torch.no_grad():
            lp = torch.log_softmax(model(inp)[..., :bos].double(), -1).gather(-1, w[..., None])[0, :, 0]
        per.update({p: -lp[p - b].item() for p in range(s, e)})
    counted = [p for p in range(64) if p not in (20, 40)]
    got = get_evaluator(f"edlm:{tmp_path / 'ar'}").score(
        scoring.apply_eos(rows_of(x), get_evaluator(f"edlm:{tmp_path / 'ar'}"), "mdlm")[0], max_tokens=30
    )[0]
    assert got.tokens == 30 and got.nll == pytest.approx(sum(per[p] for p in counted[:30]), rel=1e-5)
    res = evaluate_rows(rows_of(x), f"edlm:{tmp_path / 'ar'}", eos="mdlm")
    assert (res["tokens_scored"], res["eos_tokens_skipped"], res["samples_windowed"]) == (62, 2, 1)
    assert res["nll_per_sequence"] == pytest.approx(sum(per[p] for p in counted), rel=1e-5)


def test_windows_predict_every_position_once_with_enough_context():
    for n, context, start in itertools.product(range(0, 40), (2, 3, 8, 16), (0, 1)):
        for stride in range(1, context):
            spans = windows(n, context, stride, start)
            assert sorted(p for _, e, s in spans for p in range(s, e)) == list(range(start, n))
            for k, (b, e, s) in enumerate(spans):
                assert 0 <= b <= s < e <= n and e - b <= context
                assert b < s or (k, s) == (0, 0)  # a window's first token is context, unless a BOS precedes it
                assert k == 0 or s - b >= context - stride
    assert windows(20, 8, 7) == [(0, 8, 1), (7, 15, 8), (12, 20, 15)]


def test_samples_help_documents_eos_and_stride(capsys):
    with pytest.raises(SystemExit):
        main(["eval", "samples", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--eos {first,mdlm,all}" in out and "up to and including its first EOS" in out
    assert "mdlm (default): as MDLM's gen-PPL does" in out
    assert "--stride N" in out and "sliding windows" in out and "context - N" in out


def test_cli_prints_summary_json_last(lang_samples, tmp_path, capsys):
    _, x = lang_samples
    f = write_jsonl(tmp_path / "s.jsonl", rows_of(x[:8], k=4, method="edlm-ar", window=[0, 1]))
    assert main(["eval", "samples", "--samples", str(f), "--evaluator", "true", "--quiet"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert all(k in out for k in KEYS)
    assert (out["num"], out["method"], out["steps"], out["k"], out["window"]) == (8, "edlm-ar", 8, 4, [0, 1])
    assert out["samples"] == str(f) and 0 < out["entropy_nats"] < math.log(32)
    assert out["entropy_bits"] == pytest.approx(out["entropy_nats"] / math.log(2))


def run_cli_error(capsys, *argv):
    assert main(["eval", "samples", *argv, "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("edlm eval: error:")
    return err[0]


def test_bad_inputs_give_one_clear_error(synthetic_data, lang_samples, tmp_path, capsys):
    _, x = lang_samples
    good = write_jsonl(tmp_path / "good.jsonl", rows_of(x[:2]))
    assert "does not exist" in run_cli_error(
        capsys, "--samples", str(tmp_path / "nope.jsonl"), "--evaluator", "true"
    )
    (tmp_path / "empty.jsonl").write_text("\n\n")
    assert "holds no samples" in run_cli_error(
        capsys, "--samples", str(tmp_path / "empty.jsonl"), "--evaluator", "true"
    )
    lines = good.read_text().splitlines()
    (tmp_path / "corrupt.jsonl").write_text(lines[0] + "\n" + lines[1][: len(lines[1]) // 2] + "\n")
    assert "line 2 is not valid JSON" in run_cli_error(
        capsys, "--samples", str(tmp_path / "corrupt.jsonl"), "--evaluator", "true"
    )
    (tmp_path / "noids.jsonl").write_text(json.dumps({"text": "hi"}) + "\n")
    assert 'line 1 has no "ids"' in run_cli_error(
        capsys, "--samples", str(tmp_path / "noids.jsonl"), "--evaluator", "true"
    )
    msg = run_cli_error(capsys, "--samples", str(good), "--evaluator", "./no/such/model")
    assert "unknown evaluator" in msg and "smollm2-135m" in msg and "edlm:RUN_DIR" in msg
    assert "unknown evaluator" in run_cli_error(capsys, "--samples", str(good), "--evaluator", "what ever?")
    assert "not an edlm run folder" in run_cli_error(
        capsys, "--samples", str(good), "--evaluator", f"edlm:{tmp_path}"
    )
    other = write_jsonl(tmp_path / "char.jsonl", rows_of(x[:2], corpus="wiki-char"))
    msg = run_cli_error(capsys, "--samples", str(other), "--evaluator", "true")
    assert "ground-truth language" in msg and "wiki-char" in msg
    masked = write_jsonl(tmp_path / "masked.jsonl", [{"ids": [0, 32, 1], "corpus": "synthetic"}])
    assert "unfilled MASK" in run_cli_error(capsys, "--samples", str(masked), "--evaluator", "true")
    assert "--batch-size" in run_cli_error(
        capsys, "--samples", str(good), "--evaluator", "true", "--batch-size", "0"
    )


def test_true_evaluator_needs_prepared_synthetic(data_root, tmp_path):
    with pytest.raises(EdlmError, match="edlm data prepare synthetic"):
        evaluate_rows([{"ids": [0, 1], "corpus": "synthetic"}], "true")


def test_read_samples_skips_blank_lines(tmp_path):
    f = tmp_path / "s.jsonl"
    f.write_text('\n{"ids": [1, 2]}\n\n{"ids": [3]}\n')
    assert [r["ids"] for r in read_samples(f)] == [[1, 2], [3]]
