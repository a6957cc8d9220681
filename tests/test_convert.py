"""`edlm convert`: MDLM-format checkpoints (HF DiT, Lightning AR) -> edlm runs computing the same function.

The public files cannot be downloaded here, so every test builds a same-shaped checkpoint from
tests/mdlm_reference.py (an independent re-implementation of MDLM's networks) with random weights.
"""

from __future__ import annotations

import json
import sys
import types

import pytest
import torch
from safetensors.torch import save_file

from edlm.config.model import TransformerConfig
from edlm.diffusion.losses import ar_token_log_probs
from edlm.diffusion.subs import subs_log_probs
from edlm.errors import EdlmError
from edlm.models.transformer import Transformer
from edlm.runs.convert import convert, parameter_map
from edlm.runs.load import load_model
from mdlm_reference import ReferenceMDLM, randomize

V, D, H, C, NB, LENGTH, BOS = 33, 32, 4, 16, 2, 17, 5  # tiny; LENGTH = MDLM block length (BOS + 16)
ATOL = 1e-5


def hf_folder(path, ref: ReferenceMDLM, *, config=True, time_conditioning=False, **cfg_over):
    path.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path / "model.safetensors"))
    if config:
        cfg = {"model_type": "mdlm", "vocab_size": V, "model_length": LENGTH, "hidden_dim": D, "cond_dim": C,
               "n_blocks": NB, "n_heads": H, "dropout": 0.1, "time_conditioning": time_conditioning,
               "architectures": ["MDLM"], **cfg_over}
        (path / "config.json").write_text(json.dumps(cfg))
    return path


def _fake_class(module: str, name: str, state_fn):
    """A class pickled under a module name that will not exist when the file is read back."""
    cls = type(name, (), {"__getstate__": state_fn, "__module__": module, "__qualname__": name})
    return cls


def lightning_ckpt(path, ref: ReferenceMDLM, *, ema=True, hparams="omegaconf", sd=None, shadow=None, legacy=False):
    """A Lightning-style .ckpt like MDLM's: state_dict with backbone.*, MDLM's EMA dict, hyper-parameters
    holding an omegaconf config and a tokenizer (classes not importable here); `legacy`: torch's non-zip format."""
    state_dict = ref.state_dict() if sd is None else sd
    ck = {"epoch": 3, "global_step": 1234, "pytorch-lightning_version": "2.2.1", "state_dict": state_dict,
          "loops": {"fit_loop": {"epoch_progress": {"current": {"completed": 3}}}}, "optimizer_states": [],
          "lr_schedulers": [], "sampler": {"random_state": None}}
    if ema:
        if shadow is None:
            g = torch.Generator().manual_seed(99)
            shadow = [p.detach().clone() + 0.05 * torch.randn(p.shape, generator=g)
                      for p in ref.backbone.parameters()]
        ck["ema"] = {"decay": 0.9999, "num_updates": 1234, "shadow_params": shadow}
    mods = {}
    if hparams == "omegaconf":
        # Mimic omegaconf's pickled layout: DictConfig state {'_content': {...}} with value nodes {'_val': v}.
        mods = {m: types.ModuleType(m) for m in ("omegaconf", "omegaconf.dictconfig", "omegaconf.nodes",
                                                  "transformers", "transformers.models.gpt2.tokenization_gpt2_fast")}
        node = _fake_class("omegaconf.nodes", "AnyNode", lambda self: {"_val": self.v, "_metadata": None})
        dcfg = _fake_class("omegaconf.dictconfig", "DictConfig",
                           lambda self: {"_content": self.c, "_metadata": None, "_parent": None})
        tok = _fake_class("transformers.models.gpt2.tokenization_gpt2_fast", "GPT2TokenizerFast",
                          lambda self: {"vocab_size": 50257})
        mods["omegaconf.nodes"].AnyNode = node
        mods["omegaconf.dictconfig"].DictConfig = dcfg
        mods["transformers.models.gpt2.tokenization_gpt2_fast"].GPT2TokenizerFast = tok

        def nodes(d):
            out = dcfg()
            out.c = {k: (nodes(v) if isinstance(v, dict) else _val(node, v)) for k, v in d.items()}
            return out

        model = {"name": "small", "type": "ddit", "hidden_size": D, "cond_dim": C, "length": LENGTH,
                 "n_blocks": NB, "n_heads": H, "scale_by_sigma": True, "dropout": 0.1, "causal": True}
        config = nodes({"backbone": "ar", "parameterization": "ar", "model": model})
        ck["hyper_parameters"] = {"config": config,
                                  "tokenizer": tok()}
    elif hparams == "plain":
        ck["hyper_parameters"] = {"config": {"model": {"hidden_size": D, "n_heads": H, "n_blocks": NB,
                                                       "cond_dim": C, "length": LENGTH}}}
    old = {m: sys.modules.get(m) for m in mods}
    sys.modules.update(mods)
    try:
        torch.save(ck, path, _use_new_zipfile_serialization=not legacy)
    finally:
        for m, v in old.items():
            if v is None:
                sys.modules.pop(m, None)
            else:
                sys.modules[m] = v
    return path


def _val(node_cls, v):
    n = node_cls()
    n.v = v
    return n


def dit_ref(seed=0, time_conditioning=False):
    return randomize(ReferenceMDLM(V, D, H, C, NB, dit=True, time_conditioning=time_conditioning), seed)


def ar_ref(seed=1):
    return randomize(ReferenceMDLM(V, D, H, C, NB, dit=False), seed)


def _xt(B=3, L=LENGTH - 1, p_mask=0.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, V - 1, (B, L), generator=g)
    return torch.where(torch.rand(B, L, generator=g) < p_mask, torch.full_like(x, V - 1), x)


def _with_bos(x):
    return torch.cat([torch.full_like(x[:, :1], BOS), x], dim=1)


# ------------------------------------------------------------------------------------------------
# Fidelity: the converted model computes MDLM's function
# ------------------------------------------------------------------------------------------------

def test_reference_names_match_the_parameter_map():
    """The reference's module tree (MDLM names) and convert's map cover the same tensors, in EMA order."""
    for dit, ref in ((True, dit_ref()), (False, ar_ref())):
        names = [n.removeprefix("backbone.") for n, _ in ref.named_parameters()]
        assert names == list(parameter_map(NB, dit=dit))
        assert "backbone.rotary_emb.inv_freq" in ref.state_dict()


@pytest.mark.parametrize("time_conditioning", [False, True])
def test_dit_logits_match_reference(tmp_path, data_root, time_conditioning):
    ref = dit_ref(time_conditioning=time_conditioning)
    summary = convert("mdlm-hf", hf_folder(tmp_path / "hub", ref, time_conditioning=time_conditioning),
                      tmp_path / "run", data="synthetic", bos_id=BOS)
    assert summary["objective"] == "mdlm" and summary["missing"] == [] and summary["unexpected"] == []
    assert summary["seq_len"] == LENGTH - 1 and summary["ignored"] == ["backbone.rotary_emb.inv_freq"]
    model, meta = load_model(tmp_path / "run")
    assert meta["mask_id"] == V - 1 and meta["model"]["prefix_token"] == BOS and not meta["model"]["causal"]
    assert summary["params"] == sum(p.numel() for p in ref.parameters())
    x_t = _xt()
    t = torch.tensor([0.05, 0.5, 0.97])
    with torch.no_grad():
        got = model(x_t, t)
    sigma = -torch.log1p(-(1 - 1e-3) * t)  # MDLM's log-linear total noise, what its DiT reads
    want = ref.logits(_with_bos(x_t), sigma)[:, 1:]
    assert got.shape == want.shape == (3, LENGTH - 1, V)
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0)
    # The SUBS output: MDLM keeps -1e6 where edlm keeps -inf; the probabilities are the same.
    p_edlm = subs_log_probs(got, x_t, V - 1).exp()
    p_mdlm = ref.subs_log_probs(_with_bos(x_t), sigma)[:, 1:, :V - 1].exp()
    torch.testing.assert_close(p_edlm, p_mdlm, atol=1e-6, rtol=0)
    if not time_conditioning:  # MDLM feeds sigma = 0 whatever t is
        with torch.no_grad():
            torch.testing.assert_close(model(x_t, torch.rand(3)), got, atol=0, rtol=0)


def test_dit_weights_file_without_config(tmp_path, data_root):
    ref = dit_ref(seed=3)
    folder = hf_folder(tmp_path / "hub", ref, config=False)
    with pytest.raises(EdlmError, match="--n-heads"):
        convert("mdlm-hf", folder / "model.safetensors", tmp_path / "r0", data="synthetic", bos_id=BOS)
    s = convert("mdlm-hf", folder / "model.safetensors", tmp_path / "r1", data="synthetic", bos_id=BOS,
                n_heads=H, seq_len=8)
    model, meta = load_model(tmp_path / "r1")
    assert s["seq_len"] == 8 and meta["train"]["seq_len"] == 8
    assert meta["model"]["max_len"] == 1023  # block length 1024 assumed without config.json
    x_t = _xt(L=8)
    with torch.no_grad():
        torch.testing.assert_close(model(x_t), ref.logits(_with_bos(x_t))[:, 1:], atol=ATOL, rtol=0)


@pytest.mark.parametrize("hparams", ["omegaconf", "plain"])
def test_ar_log_probs_match_reference(tmp_path, data_root, hparams):
    ref = ar_ref()
    g = torch.Generator().manual_seed(99)
    shadow = [p.detach().clone() + 0.05 * torch.randn(p.shape, generator=g)
              for p in ref.backbone.parameters()]
    ck = lightning_ckpt(tmp_path / "ar.ckpt", ref, hparams=hparams, shadow=shadow)
    s = convert("mdlm-ar-lightning", ck, tmp_path / "run", data="synthetic", bos_id=BOS)
    assert s["objective"] == "ar" and s["ema"] and s["step"] == 1234 and s["n_heads"] == H
    assert s["params"] == sum(p.numel() for p in ref.parameters())
    x0 = _with_bos(_xt(p_mask=0.0))  # an MDLM block: BOS then LENGTH - 1 tokens
    # raw weights
    model, meta = load_model(tmp_path / "run", ema=False)
    assert meta["objective"] == "ar" and meta["model"]["causal"] and not meta["model"]["adaln"]
    with torch.no_grad():
        got = ar_token_log_probs(model, x0[:, 1:], bos_id=meta["mask_id"])
    torch.testing.assert_close(got, ref.ar_token_log_probs(x0), atol=ATOL, rtol=0)
    # EMA weights (the default for sampling/eval) are MDLM's shadow params, mapped in parameter order
    model_ema, _ = load_model(tmp_path / "run")
    ref_ema = ar_ref()
    with torch.no_grad():
        for p, s_ in zip(ref_ema.backbone.parameters(), shadow, strict=True):
            p.copy_(s_)
        got = ar_token_log_probs(model_ema, x0[:, 1:], bos_id=meta["mask_id"])
    torch.testing.assert_close(got, ref_ema.ar_token_log_probs(x0), atol=ATOL, rtol=0)
    assert not torch.allclose(got, ref.ar_token_log_probs(x0), atol=1e-3)  # EMA differs from raw
    # incremental decoding (KV cache, BOS slot fed the prefix token) equals the full pass
    inp = torch.cat([torch.full_like(x0[:, :1], V - 1), x0[:, 1:-1]], 1)
    with torch.no_grad():
        full = model(inp)
        caches = model.new_kv_caches()
        steps = [model(inp[:, :1], kv_caches=caches)]
        for i in range(1, inp.shape[1]):
            steps.append(model(inp[:, i:i + 1], start=i, kv_caches=caches))
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=ATOL, rtol=0)


def test_ar_without_ema_or_hparams(tmp_path, data_root):
    ref = ar_ref(seed=4)
    ck = lightning_ckpt(tmp_path / "ar.ckpt", ref, ema=False, hparams=None)
    with pytest.raises(EdlmError, match="--n-heads"):
        convert("mdlm-ar-lightning", ck, tmp_path / "r0", data="synthetic", bos_id=BOS)
    s = convert("mdlm-ar-lightning", ck, tmp_path / "r1", data="synthetic", bos_id=BOS, n_heads=H)
    assert not s["ema"]
    assert not (tmp_path / "r1" / "checkpoints" / "step_0001234" / "ema.safetensors").exists()


def test_new_config_fields_default_to_edlm_behaviour():
    cfg = TransformerConfig.from_dict({"vocab_size": 9, "n_layers": 1, "d_model": 16, "n_heads": 2,
                                       "cond_dim": 8, "max_len": 8})  # a run.json from before the fields
    assert (cfg.adaln, cfg.time_input, cfg.prefix_token) == (True, "t", None)
    keys = set(Transformer(cfg).state_dict())
    assert {"t_embed.mlp.0.weight", "blocks.0.adaLN.weight", "final.adaLN.weight"} <= keys
    with pytest.raises(ValueError, match="time_input"):
        Transformer(TransformerConfig(time_input="sigma"))


# ------------------------------------------------------------------------------------------------
# Mismatches fail loudly, naming the keys, and write nothing
# ------------------------------------------------------------------------------------------------

def _edit(sd, *, drop=(), add=None, reshape=None):
    sd = dict(sd)
    for k in drop:
        del sd[k]
    sd.update(add or {})
    for k, shape in (reshape or {}).items():
        sd[k] = torch.zeros(shape)
    return sd


CASES = {
    "missing": (dict(drop=["backbone.blocks.1.attn_out.weight"]),
                ["backbone.blocks.1.attn_out.weight", "missing"]),
    "unexpected": (dict(add={"backbone.blocks.0.attn_qkv.bias": torch.zeros(3 * D)}),
                   ["backbone.blocks.0.attn_qkv.bias", "unexpected"]),
    "outside": (dict(add={"model.embed.weight": torch.zeros(2)}), ["model.embed.weight"]),
    "shape": (dict(reshape={"backbone.blocks.0.mlp.0.weight": (2 * D, D)}),
              ["backbone.blocks.0.mlp.0.weight", "(64, 32)", "(128, 32)"]),
    "extra_block": (dict(add={"backbone.blocks.2.norm1.weight": torch.ones(D)}),
                    ["backbone.blocks.2.norm1.weight"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("fmt", ["mdlm-hf", "mdlm-ar-lightning"])
def test_mismatched_state_dict_is_rejected(tmp_path, data_root, fmt, case):
    edit, needles = CASES[case]
    ref = dit_ref() if fmt == "mdlm-hf" else ar_ref()
    sd = _edit(ref.state_dict(), **edit)
    if fmt == "mdlm-hf":
        folder = hf_folder(tmp_path / "hub", ref)
        save_file({k: v.contiguous() for k, v in sd.items()}, str(folder / "model.safetensors"))
        src = folder
    else:
        src = lightning_ckpt(tmp_path / "ar.ckpt", ref, sd=sd, ema=False)
    with pytest.raises(EdlmError) as e:
        convert(fmt, src, tmp_path / "run", data="synthetic", bos_id=BOS)
    for n in needles:
        assert n in str(e.value), (n, str(e.value))
    if case == "extra_block" and fmt == "mdlm-hf":  # config.json says 2 blocks
        assert "unexpected" in str(e.value)
    assert not (tmp_path / "run").exists()


def test_other_rejections(tmp_path, data_root):
    ref = dit_ref()
    hub = hf_folder(tmp_path / "hub", ref, n_blocks=3)
    with pytest.raises(EdlmError, match=r"backbone\.blocks\.2\.attn_qkv\.weight"):
        convert("mdlm-hf", hub, tmp_path / "r", data="synthetic", bos_id=BOS)
    hub = hf_folder(tmp_path / "hub2", ref, hidden_dim=64)
    with pytest.raises(EdlmError, match=r"vocab_embed\.embedding \(33, 32\) \(expected \(33, 64\)\)"):
        convert("mdlm-hf", hub, tmp_path / "r", data="synthetic", bos_id=BOS)
    hub = hf_folder(tmp_path / "hub3", ref, n_heads=8)  # rotary buffer is for head size 8, not 4
    with pytest.raises(EdlmError, match="inv_freq"):
        convert("mdlm-hf", hub, tmp_path / "r", data="synthetic", bos_id=BOS)
    with pytest.raises(EdlmError, match="not an MDLM"):
        convert("mdlm-hf", hf_folder(tmp_path / "hub4", ref, model_type="bert"), tmp_path / "r", bos_id=BOS)
    with pytest.raises(EdlmError, match="GPT-2"):  # vocabulary is not GPT-2 + MASK and no --bos-id
        convert("mdlm-hf", hf_folder(tmp_path / "hub5", ref), tmp_path / "r", data="synthetic")
    with pytest.raises(EdlmError, match="--seq-len"):
        convert("mdlm-hf", hf_folder(tmp_path / "hub6", ref), tmp_path / "r", bos_id=BOS, seq_len=LENGTH)
    # the DiT offered as the AR baseline, and the AR offered as the DiT
    with pytest.raises(EdlmError, match="looks like a DiT"):
        convert("mdlm-ar-lightning", lightning_ckpt(tmp_path / "dit.ckpt", ref, ema=False), tmp_path / "r",
                bos_id=BOS)
    with pytest.raises(EdlmError, match="looks like the AR baseline"):
        convert("mdlm-hf", hf_folder(tmp_path / "hub7", ar_ref()), tmp_path / "r", bos_id=BOS)
    # EMA list that does not line up
    ar = ar_ref()
    shadow = [p.detach().clone() for p in ar.backbone.parameters()]
    with pytest.raises(EdlmError, match="shadow_params has"):
        convert("mdlm-ar-lightning", lightning_ckpt(tmp_path / "a.ckpt", ar, shadow=shadow[:-1]),
                tmp_path / "r", bos_id=BOS)
    shadow[1], shadow[2] = shadow[2], shadow[1]  # norm1.weight (D,) <-> attn_qkv.weight (3D, D)
    with pytest.raises(EdlmError, match=r"shadow_params\[1\]"):
        convert("mdlm-ar-lightning", lightning_ckpt(tmp_path / "b.ckpt", ar, shadow=shadow), tmp_path / "r",
                bos_id=BOS)
    # not a checkpoint at all; an existing run folder is never overwritten
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(EdlmError, match="cannot read"):
        convert("mdlm-ar-lightning", tmp_path / "junk.ckpt", tmp_path / "r", bos_id=BOS)
    assert not (tmp_path / "r").exists()
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "run.json").write_text("{}")
    with pytest.raises(EdlmError, match="not empty"):
        convert("mdlm-hf", hf_folder(tmp_path / "hub8", ref), tmp_path / "taken", bos_id=BOS)


# ------------------------------------------------------------------------------------------------
# The command line: convert both, then EDLM-AR sampling and eval on the converted runs
# ------------------------------------------------------------------------------------------------

def _cli(capsys, *argv):
    from edlm.cli import main

    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, (json.loads(out.strip().splitlines()[-1]) if rc == 0 else None), err


def test_cli_convert_then_sample_and_eval(tmp_path, synthetic_data, capsys):
    from edlm.data import corpora

    assert corpora.manifest("synthetic")["mask_id"] == V - 1
    hub = hf_folder(tmp_path / "hub", randomize(ReferenceMDLM(V, D, H, C, NB, dit=True), 0, scale=0.3))
    ar = randomize(ReferenceMDLM(V, D, H, C, NB, dit=False), 1, scale=0.3)
    ck = lightning_ckpt(tmp_path / "ar.ckpt", ar)
    mrun, arun = tmp_path / "mdlm", tmp_path / "ar"
    rc, s, _ = _cli(capsys, "convert", "--from", "mdlm-hf", "--src", hub, "--out", mrun,
                    "--data", "synthetic", "--bos-id", BOS)
    assert rc == 0 and s["objective"] == "mdlm" and s["data_prepared"]
    assert set(s) >= {"from", "src", "out", "objective", "params", "missing", "unexpected"}
    rc, s, _ = _cli(capsys, "convert", "--from", "mdlm-ar-lightning", "--src", ck, "--out", arun,
                    "--data", "synthetic", "--bos-id", BOS)
    assert rc == 0 and s["objective"] == "ar" and s["ema"]
    common = ["--device", "cpu", "--quiet"]
    rc, s, _ = _cli(capsys, "sample", "--ckpt", mrun, "--energy", f"ar:{arun}", "--num", 2, "--steps", 4,
                    "--k", 2, "--out", tmp_path / "edlm.jsonl", *common)
    assert rc == 0
    rows = [json.loads(r) for r in (tmp_path / "edlm.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(len(r["ids"]) == LENGTH - 1 and max(r["ids"]) < V - 1 for r in rows)
    rc, s, _ = _cli(capsys, "sample", "--ckpt", arun, "--num", 2, "--out", tmp_path / "ar.jsonl", *common)
    assert rc == 0
    ev = ["--split", "valid", "--max-blocks", 4, "--batch-size", 4, *common]
    for argv in (["--ckpt", mrun], ["--ckpt", arun], ["--ckpt", mrun, "--energy", f"coar:{arun}"],
                 ["--ckpt", mrun, "--energy", f"ar:{arun}", "--logz-samples", 2]):
        rc, s, err = _cli(capsys, "eval", "nelbo", *argv, *ev)
        assert rc == 0, err
        assert s["nll"] == s["nll"] and 0 < s["nll"] < 50
    # a mismatched checkpoint: exit 2, one line naming the key
    bad = hf_folder(tmp_path / "bad", randomize(ReferenceMDLM(V, D, H, C, NB, dit=True), 0))
    sd = {k: v for k, v in ReferenceMDLM(V, D, H, C, NB, dit=True).state_dict().items()
          if k != "backbone.output_layer.linear.bias"}
    save_file(sd, str(bad / "model.safetensors"))
    rc, _, err = _cli(capsys, "convert", "--from", "mdlm-hf", "--src", bad, "--out", tmp_path / "x",
                      "--data", "synthetic", "--bos-id", BOS)
    assert rc == 2 and "backbone.output_layer.linear.bias" in err
