"""A loaded run: edlm.load opens a run folder; Run samples from it (MDLM, EDLM, AR), scores a split, plots.

    import edlm
    run = edlm.load("runs/mdlm")                                    # a Run: model, meta, schedule, tokenizer
    out = run.sample(num=8, steps=16, energy=edlm.ar_energy("runs/ar"), k=4)
    print(out.texts, out.summary["mean_ess"])
    print(run.nelbo(split="test", max_blocks=64))                  # what `edlm eval nelbo` prints

`edlm sample`, `edlm eval nelbo` and `edlm plot` are thin layers over these calls: the command checks its
flags and adds their names to messages; this module speaks of arguments, never of flags.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from edlm import validate
from edlm.api.energies import as_energy, energy_with
from edlm.config.sampling import KPolicy, check_sharpness
from edlm.errors import EdlmError
from edlm.runs.folder import RunMeta
from edlm.safe_io import check_outputs
from edlm.sampling.fast import check_fast
from edlm.sampling.generate import Samples
from edlm.utils import pick_device, quiet_default
from edlm.validate import out_file, token_ids, window_in_unit


def load(ckpt: str | Path, device: str | torch.device = "cpu", *, ema: bool = True, expect: str | None = None,
         accept_data_change: bool = False) -> Run:
    """Open a run folder `ckpt` (written by edlm.train, `edlm train` or `edlm convert`) and rebuild its model.

    device: "cpu", "cuda", "cuda:N", "auto" or a torch.device. ema: the EMA weights (as evaluated) rather
    than the raw ones. expect: "mdlm", "ar", "nce" or several joined by "|" to refuse other kinds of run.
    A run whose corpus changed since it was made (another text prepared under its name) is an error;
    accept_data_change=True makes it a warning, for this run and the energy runs it is used with."""
    from edlm.runs.load import load_model

    dev = pick_device(device)
    model, meta = load_model(ckpt, dev, ema=ema, expect=expect, accept_data_change=accept_data_change)
    return Run(path=str(ckpt), model=model, meta=RunMeta.from_dict(meta), device=dev,
               accept_data_change=accept_data_change)


def _at_least(name: str, value, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise EdlmError(f"{name} must be an integer >= {low}, not {value!r}")


def _check_sample_args(choice, **a) -> None:
    """Run.sample's arguments, as strictly as `edlm sample` checks its flags (GenerateRequest.check then checks
    every range again, for every caller of generate). choice: the energy (EnergyChoice) or None."""
    for name in ("num", "steps", "k", "batch_size", "trace_num", "min_unmask"):
        _at_least(name, a[name], 1)
    for name in ("length", "stride"):  # None: the default (the training length; no semi-AR blocks); never 0
        if a[name] is not None:
            _at_least(name, a[name], 1)
    window_in_unit(a["window"])
    for name in ("callback", "on_batch"):
        if a[name] is not None and not callable(a[name]):
            raise EdlmError(f"{name} must be a function (or None), not {a[name]!r}")
    pol = a["k_policy"]
    if pol is not None and (choice is None or not isinstance(pol, KPolicy)):
        raise EdlmError("k_policy adapts the EDLM candidates per step: give an energy")
    if pol is not None and a["k"] > pol.k_max:
        raise EdlmError(f"k {a['k']} is the first step's k under k_policy: give at most its k_max {pol.k_max}")
    from edlm.config.unmasking import UNMASKINGS

    strategy = UNMASKINGS.get(a["unmask"])
    if a["min_unmask"] > 1 and (choice is None or (strategy is not None and not strategy.min_unmask)):
        ok = " or ".join(repr(n) for n, u in UNMASKINGS.items() if u.min_unmask)
        raise EdlmError(f"min_unmask > 1 skips the energy on steps that unmask few positions: give an energy, "
                        f"with unmask={ok}")
    if a["trace_mdlm"] and (a["trace"] is None or choice is None):
        raise EdlmError("trace_mdlm puts plain MDLM beside EDLM on the trace page: give trace and an energy")
    out_file("trace", a["trace"])


def _check_nelbo_args(**a) -> None:
    """Run.nelbo's numeric arguments, as strictly as `edlm eval nelbo` checks its flags."""
    for name in ("k", "t_samples", "batch_size", "bound_draws", "min_unmask"):
        validate.at_least(name, a[name], 1)
    for name in ("steps", "max_blocks"):
        validate.at_least(name, a[name], 1, optional=True)
    validate.at_least("logz_samples", a["logz_samples"], 0)
    if a["logz_samples"] < 2:
        raise EdlmError("logz_samples must be >= 2 (the estimate's upper end needs leave-one-out terms)")
    validate.at_most("steps", a["steps"], validate.MAX_LOOP, validate.BOUND_STEPS_WHY)
    for name in ("t_samples", "bound_draws"):
        validate.at_most(name, a[name], validate.MAX_LOOP, validate.PASSES_WHY)
    validate.seed("seed", a["seed"])
    validate.temperature("temperature", a["temperature"])
    if a["t_eps"] is not None:
        validate.finite_in("t_eps", a["t_eps"], 0, 1, lo_open=True, hi_open=True)
    window_in_unit(a["window"])


@dataclass
class Run:
    """A loaded run: `model` (eval mode, on `device`), `meta` (RunMeta), `schedule`, `tokenizer`."""

    path: str
    model: torch.nn.Module
    meta: RunMeta
    device: torch.device
    accept_data_change: bool = False
    """loaded although its corpus changed (edlm.load's argument): energy runs loaded for it accept it too"""

    @property
    def schedule(self):
        """The noise schedule the run was trained with (alpha(t), alpha'(t))."""
        from edlm.diffusion.schedules import get_schedule

        return get_schedule(self.meta.train.schedule)

    @property
    def tokenizer(self):
        """The tokenizer of the run's corpus: encode(text) -> ids, decode(ids) -> text."""
        from edlm.data.tokenizers import tokenizer_for

        return tokenizer_for(self.meta.data)

    def encode(self, text: str, what: str = "prefix") -> list[int]:
        """Token ids of `text` under the run's tokenizer (an error naming `what` if a symbol is not in its
        vocabulary; the CLI passes its flag name)."""
        tok = self.tokenizer
        try:
            ids = tok.encode(text)
        except ValueError as e:
            raise EdlmError(f"{what} {text!r}: {e}; use only symbols of the run's corpus ({self.meta.data})") from None
        bad = [i for i in ids if not 0 <= i < tok.vocab_size]
        if bad:
            raise EdlmError(f"{what} {text!r}: token {bad[0]} is outside the vocabulary (0..{tok.vocab_size - 1})")
        return ids

    def sample(self, num: int = 8, steps: int = 64, energy=None, k: int = 4, window=(0.0, 1.0),
               temperature: float = 1.0, prefix=None, seed: int = 0, length: int | None = None,
               batch_size: int = 16, callback=None, *, precision: str = "auto", compile: bool = False,
               cache: bool = True, quiet: bool | None = None, on_batch=None, unmask: str = "random", infill=None,
               stride: int | None = None, trace=None, trace_num: int = 4, trace_mdlm: bool = False,
               k_policy=None, k_max: int | None = None, k_min: int | None = None, min_unmask: int = 1,
               out=None, sampler: str = "step", threshold: float = 0.9, block_size: int | None = None,
               kv_cache: str = "none", kv_refresh: int = 0, token_temperature: float = 1.0,
               top_p: float = 1.0, energy_form: str | None = None, energy_scale: float | None = None) -> Samples:
        """Generate `num` sequences; returns Samples (tokens, texts, rows, summary). Nothing is written.

        MDLM run: `steps` ancestral denoising steps from all-MASK. With `energy` (edlm.ar_energy(ar_run),
        edlm.coar_energy(ar_run), edlm.nce_energy(nce_run) or a "kind:path" string) it is EDLM: on steps
        whose time t lies in `window` = (t_lo, t_hi), `k` candidates are drawn per sequence and one is
        kept by importance weights softmax(-E / temperature) (temperature 1 = the exact EDLM target):
        `temperature` is the ENERGY's. AR run: left-to-right sampling (`steps`, `energy`, `k`, `window` do not
        apply).

        token_temperature, top_p: sharpness of every token draw (MDLM steps, EDLM candidates, confidence, AR):
            each position's distribution p(v) becomes p(v)^(1/token_temperature), then only its nucleus of mass
            >= top_p is kept (sampling/sharpen.py). 1, 1 = the model's own distribution (unchanged samples).
        energy_form, energy_scale: with a string energy "lm:NAME", its form ("residual", the default, or "product")
            and scale; with "py:MODULE:FUNCTION", its scale (edlm.lm_energy / edlm.fn_energy take them directly).

        unmask: "random" (MDLM's ancestral step) or "confidence" (each step keeps the schedule's expected
        number of draws, the most confident ones; with an energy, of the candidate the energy picks).
        prefix: text (tokenised with the run's tokenizer) or token ids, kept fixed at the start of every
            sample; or a list of `num` of them, one per sample. length: tokens per sample (default: the training
            length). seed: the random stream.
        callback(step, x_t, t, ess): called after every MDLM/EDLM step with the step index, the current
            tokens (B, L), the step's time t, and the step's effective sample size (B,) when the energy
            ran on that step, else None (not called for AR runs).
        precision: "auto" (bf16 autocast on a GPU, fp32 on a CPU), "bf16" or "fp32"; compile: torch.compile
            the denoiser trunk; cache: reuse the denoiser output while x_t is unchanged; on_batch(rows):
            each batch's rows as soon as they exist; quiet: no progress bar (default: quiet unless stderr is a
            terminal); out: also write the rows to this JSONL file (what `edlm sample --out` writes).
        infill: fixed tokens anywhere, the rest generated (MDLM and EDLM): a template "ab[MASK*5]cd" ([MASK] =
            one token to generate, [MASK*N] = N), token ids with None for blanks, or (ids, keep); it sets the
            length (sampling/infill.py); or a list of `num` templates of one length, one per sample. Not with
            prefix.
        stride: semi-autoregressive generation, for a length beyond the context: blocks of the training length,
            each `stride` new tokens on, the tokens before them in the block fixed (sampling/semiar.py). The
            callback then sees the whole (B, length) tokens, its step index counting on across blocks.
        trace: a path: write an HTML page animating the denoising of the first `trace_num` samples (t, and
            for EDLM the ESS and the winning candidate per step); trace_mdlm: with an energy, also trace plain
            MDLM from the same seed, side by side (sampling/trace.py).
        k_policy: None or "fixed" (k candidates on every EDLM step), "ess" (edlm.KPolicy(k_max, k_min)) or an
            edlm.KPolicy: k on the first EDLM step, then each sequence's ESS sets its own next k in [k_min, k_max]
            (default 2..16; sampling/adaptive.py); the summary then reports mean_k and
            energy_candidates_per_sample (the cost).
        min_unmask: with an energy, run it only for sequences that unmask at least this many positions on a step;
            the others take a plain MDLM draw (random unmasking only).
        sampler: "step" (the `steps` time grid), "first-hit" (EXACT continuous-time sampling, one network call
            per generated token: the step sampler's law as steps grow without bound; `steps` does not apply) or
            "threshold" (APPROXIMATE: each step unmasks every position whose top probability exceeds
            `threshold`, at least one; the steps adapt). All three take an energy (docs/fast_samplers.md).
        block_size: generate in left-to-right blocks of this many tokens, each with `steps` (sampling/blocks.py).
        kv_cache: "none", "prefix" or "dual": a block's network calls reuse the keys and values of the positions
            before it (prefix) or on both sides (dual), recomputed at each block's start and every `kv_refresh`
            calls (0: only there). APPROXIMATE for these bidirectional models (kv_refresh=1 is exact); needs
            block_size or stride (sampling/kvcache.py)."""
        from edlm.api.generate import GenerateRequest, generate
        from edlm.config.sampling import KPolicy, parse_k_policy

        obj = self.meta.objective
        quiet = quiet_default(quiet)
        if out is not None:
            out_file("`out`", out)
        if obj == "nce":
            raise EdlmError(f"{self.path} is an energy (nce) run and cannot generate: load an MDLM run and pass "
                            f"energy=edlm.nce_energy({self.path!r})")
        choice = as_energy(energy_with(energy, energy_form, energy_scale))
        if choice is not None and obj != "mdlm":
            raise EdlmError("an energy applies to an MDLM run (the proposal); this run is autoregressive")
        if isinstance(k_policy, KPolicy) and (k_max, k_min) != (None, None):
            raise EdlmError("k_max / k_min set the bounds of k_policy='ess'; a KPolicy carries its own")
        try:
            k_policy = parse_k_policy(k_policy, **{n: v for n, v in (("k_max", k_max), ("k_min", k_min))
                                                   if v is not None})
        except ValueError as e:
            raise EdlmError(str(e)) from None
        if k_policy is None and (k_max, k_min) != (None, None):
            raise EdlmError("k_max / k_min bound the adaptive k: give them with k_policy='ess'")
        _check_sample_args(choice, num=num, steps=steps, k=k, batch_size=batch_size, trace_num=trace_num,
                           min_unmask=min_unmask, length=length, stride=stride, window=window, callback=callback,
                           on_batch=on_batch, k_policy=k_policy, unmask=unmask, trace=trace, trace_mdlm=trace_mdlm)
        try:
            check_sharpness(token_temperature, top_p)
        except ValueError as e:
            raise EdlmError(f"{e} (1 = the model's own distribution)") from None
        check_fast(obj, sampler=sampler, threshold=threshold, block_size=block_size, kv_cache=kv_cache,
                   kv_refresh=kv_refresh, unmask=unmask, stride=stride)
        fixed = self._infill(infill, prefix, length, stride, num)
        length = (len(fixed[0] if _listed(fixed) else fixed) if fixed is not None
                  else (self.meta.train.seq_len if length is None else length))
        block = min(self.meta.train.seq_len, self.model.cfg.max_len)
        if stride is not None:
            if obj != "mdlm":
                raise EdlmError("stride (semi-autoregressive blocks) applies to an MDLM run; an AR run needs none")
            if stride > block:
                raise EdlmError(f"stride {stride} is more than the block length {block} (the training length): "
                                f"give 1..{block}")
        elif length > self.model.cfg.max_len:
            what = f"the infill template has {length} tokens, which" if fixed is not None else f"length {length}"
            raise EdlmError(f"{what} exceeds what the model allows ({self.model.cfg.max_len}); to generate longer, "
                            f"pass stride=S (semi-autoregressive blocks of {block} tokens, e.g. stride={block // 2})")
        ids = self._prefix(prefix, num)
        longest = max(len(p) for p in ids) if _listed(ids) else len(ids or ())
        if longest >= length:
            raise EdlmError(f"the prefix has {longest} tokens, not fewer than the sample length {length}")
        if trace is not None and obj != "mdlm":
            raise EdlmError("trace draws the denoising of an MDLM run (with or without an energy); this run is "
                            "autoregressive")
        if trace is not None:
            src = choice.source if choice is not None else None
            check_outputs({"`trace`": trace}, {"the run": self.path,
                                               "the energy run": src.path if isinstance(src, Run) else src})
        spec = choice.label() if choice is not None else None
        req = GenerateRequest(ckpt=self.path, num=num, steps=steps, batch_size=batch_size, length=length,
                              seed=seed, energy=spec, k=k, window=tuple(window) if window else None,
                              temperature=temperature, prefix=ids or None, cache=cache, precision=precision,
                              compile=compile, unmask=unmask, fixed=fixed, stride=stride, k_policy=k_policy,
                              min_unmask=min_unmask, sampler=sampler, threshold=threshold,
                              block_size=block_size, kv_cache=kv_cache, kv_refresh=kv_refresh,
                              token_temperature=token_temperature, top_p=top_p)
        req.check()  # every range, before the energy's run is loaded
        energies = {spec: choice.build(self)} if choice is not None else None
        recorders = self._recorders(trace, trace_num, req, summary_label=choice)
        rows, summary = generate(req, self.device, models=(self.model, self.meta.raw), energies=energies,
                                 quiet=quiet, on_batch=on_batch, callback=callback,
                                 trace=recorders[0] if recorders else None)
        if recorders:
            summary["trace"] = self._write_trace(trace, recorders, req, trace_mdlm and choice is not None)
        if out is not None:
            from edlm.utils import atomic_write_bytes

            atomic_write_bytes(out, "".join(json.dumps(r) + "\n" for r in rows).encode())
            summary["out"] = str(out)
        tokens = torch.tensor([r["ids"] for r in rows], dtype=torch.long)
        return Samples(tokens=tokens, texts=[r["text"] for r in rows], rows=rows, summary=summary)

    def _prefix(self, prefix, num: int):
        """The prefix as ids: one list for all samples, or a list of `num` lists (one per sample)."""
        if prefix is None:
            return None
        if isinstance(prefix, (list, tuple)) and prefix and all(isinstance(p, (str, list, tuple)) for p in prefix):
            if len(prefix) != num:  # one per sample
                raise EdlmError(f"{len(prefix)} prefixes for num={num} samples: give one per sample, or one for all")
            return [self._prefix_ids(p, f"prefix {i}") for i, p in enumerate(prefix)]
        return self._prefix_ids(prefix)

    def _prefix_ids(self, prefix, what: str = "prefix") -> list[int]:
        """One prefix as token ids: text through the run's tokenizer, or ids checked against the vocabulary
        (bytes, floats, nested lists and the MASK id are refused)."""
        if isinstance(prefix, str):
            return self.encode(prefix, what=what)
        return token_ids(what, prefix, self.tokenizer.vocab_size, self.meta.mask_id)

    def infill(self, template, num: int = 8, steps: int = 64, **kwargs) -> Samples:
        """Fill the blanks of `template` ("ab[MASK*5]cd", ids with None blanks, or (ids, keep)); the other
        arguments are Run.sample's (energy, k, seed, stride, trace ...)."""
        return self.sample(num=num, steps=steps, infill=template, **kwargs)

    def _infill(self, infill, prefix, length, stride, num: int = 1) -> list | None:
        """The infill as a list (id or None per position), or a list of `num` of them (one per sample, one
        length), checked against the run."""
        if infill is None:
            return None
        from edlm.sampling.infill import Infill, as_infill

        if isinstance(infill, list) and infill and all(isinstance(f, (str, Infill, list)) for f in infill):
            if len(infill) != num:
                raise EdlmError(f"{len(infill)} infill templates for num={num} samples: give one per sample, or "
                                "one for all")
            rows = [self._infill(f, prefix, length, stride) for f in infill]
            if len({len(r) for r in rows}) > 1:
                raise EdlmError(f"the infill templates have {sorted({len(r) for r in rows})} tokens: samples "
                                "generated together need one length (add or remove [MASK] blanks)")
            return rows
        if self.meta.objective != "mdlm":
            raise EdlmError("infilling needs an MDLM run (an AR run only continues a prefix)")
        if prefix is not None:
            raise EdlmError("give prefix or infill, not both (write the prefix into the infill template)")
        spec = as_infill(infill, lambda text: self.encode(text, what="infill template"))
        if length is not None and length != spec.length:
            raise EdlmError(f"the infill has {spec.length} tokens but length={length}: leave length out (the "
                            "template sets it) or add [MASK*N] blanks")
        V = self.tokenizer.vocab_size
        bad = [i for i in spec.ids if i is not None and not 0 <= i < V]
        if bad:
            raise EdlmError(f"infill token {bad[0]} is outside the vocabulary (0..{V - 1}); mark blanks with None")
        return list(spec.ids)

    def _recorders(self, trace, trace_num, req, summary_label=None) -> list:
        if trace is None:
            return []
        from edlm.sampling.trace import TraceRecorder

        label = "MDLM" if summary_label is None else f"EDLM-{summary_label.kind.upper()}"
        info = {"steps": req.steps, "seed": req.seed}
        if summary_label is not None:
            info.update(k=req.k, window=",".join(f"{w:g}" for w in req.window) if req.window else "none")
        if req.stride is not None:
            info["stride"] = req.stride
        return [TraceRecorder(label=label, keep=trace_num, info=info)]

    def _write_trace(self, path, recorders, req, with_mdlm: bool) -> str:
        """The HTML page; with_mdlm: trace plain MDLM from the same seed too and put it beside the EDLM one."""
        from dataclasses import replace

        from edlm.api.generate import generate
        from edlm.sampling.trace import write_trace_html

        if with_mdlm:
            first = min(req.num, req.batch_size)  # the traced batch; same seed, same size: same start stream
            rec = self._recorders(path, recorders[0].keep, replace(req, energy=None, k=1))[0]
            cut = {f: getattr(req, f)[:first] for f in ("prefix", "fixed") if _listed(getattr(req, f))}
            generate(replace(req, energy=None, k=1, num=first, k_policy=None, min_unmask=1, **cut), self.device,
                     models=(self.model, self.meta.raw), quiet=True, trace=rec)
            recorders = [*recorders, rec]
        title = f"edlm denoising trace: {Path(self.path).name} ({self.meta.data})"
        return str(write_trace_html(path, recorders, self.tokenizer, title=title))

    def nelbo(self, split: str = "test", steps: int | None = None, energy=None, k: int = 4, window=(0.0, 1.0),
              temperature: float = 1.0, *, min_unmask: int = 1, t_samples: int = 1, bound_draws: int = 8,
              logz_samples: int = 8,
              t_eps: float | None = None, max_blocks: int | None = None, batch_size: int = 32, seed: int = 0,
              quiet: bool = True) -> dict:
        """Per-token NLL / perplexity / BPC on a split, each labelled with what it is: the dict
        `edlm eval nelbo` prints (docs/likelihood.md says what each entry means).

        MDLM run: the continuous-time NELBO (an upper bound); with `steps` also the NELBO of the steps-step
        sampler. AR run: the exact NLL. With `energy` (as in Run.sample): the paper's EDLM likelihood (an
        ESTIMATE from `logz_samples` proposal draws, not a bound) and, with `steps`, an upper bound on the
        steps-step EDLM sampler's NLL (k, window, temperature, min_unmask: the sampler Run.sample runs with the
        same arguments, whose defaults these share; averaged over `bound_draws` draws).
        t_samples: Monte-Carlo (t, mask) draws per sequence; t_eps: smallest t of the integral (default:
        the run's own); max_blocks: evaluate at most this many sequences. "warnings" lists what to doubt."""
        from edlm.data import corpora
        from edlm.data.loader import iter_eval_blocks
        from edlm.eval.likelihood import EDLMSampler, LikelihoodPlan, evaluate_split
        from edlm.eval.report import likelihood_report
        from edlm.sampling.budget import check as check_memory
        from edlm.sampling.budget import nelbo_need
        from edlm.utils import progress

        obj = self.meta.objective
        if obj not in ("mdlm", "ar"):
            raise EdlmError(f"{self.path} is a {obj!r} run: the likelihood needs an MDLM or AR run")
        if split not in ("train", "valid", "test"):
            raise EdlmError(f"split {split!r}: use 'train', 'valid' or 'test'")
        _check_nelbo_args(k=k, t_samples=t_samples, batch_size=batch_size, bound_draws=bound_draws, seed=seed,
                          steps=steps, max_blocks=max_blocks, logz_samples=logz_samples, temperature=temperature,
                          t_eps=t_eps, window=window, min_unmask=min_unmask)
        plan = LikelihoodPlan(t_samples=t_samples, t_eps=t_eps, steps=steps, logz_samples=logz_samples)
        choice, name = as_energy(energy), obj
        if choice is not None:
            if obj != "mdlm":
                raise EdlmError("an energy applies to an MDLM run (the proposal); this run is autoregressive")
            built, name = choice.build(self)
            plan.sampler = EDLMSampler(built, k=k, window=window, temperature=temperature, bound_draws=bound_draws,
                                       min_unmask=min_unmask)
        spec = choice.label() if choice is not None else None
        tokens = corpora.load_split(self.meta.data, split)
        L = self.meta.train.seq_len
        n_blocks = len(tokens) // L if max_blocks is None else min(max_blocks, len(tokens) // L)
        check_memory(nelbo_need(self.model.cfg, self.meta.mask_id, objective=obj, batch=batch_size, blocks=n_blocks,
                                length=L, steps=steps, k=k, logz_samples=logz_samples if choice else 0,
                                bound_draws=bound_draws, energy=plan.sampler.energy if plan.sampler else None),
                     self.device)
        bar = progress(total=n_blocks, desc=f"eval {name}", unit="seq", disable=quiet or None)
        res = evaluate_split(self.model, self.meta.raw, iter_eval_blocks(tokens, L, batch_size, max_blocks=n_blocks),
                             plan, seed=seed, device=self.device, bar=bar)
        bar.close()
        rep = likelihood_report(res, objective=obj, char=self.meta.tokenizer in ("char", "chars"), steps=steps,
                                energy=spec, k=k, window=window, temperature=temperature, logz_samples=logz_samples)
        if "edlm_steps" in rep["results"]:
            rep["results"]["edlm_steps"]["bound_draws"] = bound_draws
            rep["results"]["edlm_steps"]["min_unmask"] = min_unmask
        return {"model": name, "split": split, "tokens": res["tokens"], "ckpt": self.path, "data": self.meta.data,
                "energy": spec, "t_samples": t_samples, "seed": seed, **rep}


def _listed(v) -> bool:
    """True for a per-sample list (a list of lists)."""
    return isinstance(v, list) and bool(v) and isinstance(v[0], list)


def plot_run(path: str | Path, out: str | Path | None = None) -> Path:
    """Render a run folder's training loss and validation curves (from metrics.jsonl) to a PNG;
    returns its path (default RUN/curves.png)."""
    from edlm.plots import plot_training_curves

    return plot_training_curves(Path(path), Path(out) if out is not None else None)
