"""`edlm sample`: MDLM ancestral sampling, EDLM with --energy, or AR sampling, to a JSONL file."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from edlm.commands import Paths, add_accept_data_change, energy_run, in_flag_terms, old_spelling
from edlm.config.unmasking import UNMASKINGS, unmask_names
from edlm.errors import EdlmError
from edlm.safe_io import AppendFile, locked_by_other, write_error
from edlm.utils import pick_device
from edlm.validate import MAX_LOOP, STEPS_WHY, at_least, at_most, finite_in, out_file, seed, temperature


def parse_window(s: str):
    if s.lower() in ("none", "off", ""):
        return None
    try:
        lo, hi = (float(v) for v in s.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--window {s!r}: expected T_LO,T_HI such as 0.8,1 (or none)") from None
    if not 0 <= lo <= hi <= 1:
        raise argparse.ArgumentTypeError(f"--window {s!r}: need 0 <= T_LO <= T_HI <= 1")
    return (lo, hi)


OPTIONS = ("ckpt", "out", "num", "steps", "batch_size", "length", "seed", "energy", "k", "k_policy", "k_max",
           "k_min", "min_unmask", "window", "temperature", "unmask", "prefix", "infill", "stride", "trace",
           "trace_num", "trace_mdlm", "cache", "precision", "compile", "device", "quiet", "accept_data_change",
           "sampler", "threshold", "block_size", "kv_cache", "kv_refresh", "energy_form", "energy_scale",
           "token_temperature", "top_p")
"""the option names Run.sample's messages may use (as `name`), each a flag here"""


def unmask_help() -> str:
    """--unmask's help, from the registry of strategies (edlm/config/unmasking.py)."""
    return ("which positions a step unmasks (with --energy: EDLM on top of it): "
            + "; ".join(f"{u.name}: {u.help}" for u in UNMASKINGS.values()))


def add_parser(sub, name, help_):
    p = sub.add_parser(name, help=help_, formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       description=help_ + ". Rows: ids, text, seconds, method, steps, k, window.")
    p.add_argument("--ckpt", required=True, help="run folder of an MDLM or AR model")
    p.add_argument("--out", required=True,
                   help="JSONL file to write (one sample per line). Rows go to OUT.partial as each batch "
                   "finishes, renamed to OUT at the end: after a crash OUT.partial holds every finished batch")
    p.add_argument("--num", type=int, default=16, help="number of samples")
    p.add_argument("--steps", type=int, default=64, help="denoising steps (MDLM/EDLM)")
    p.add_argument("--batch-size", type=int, default=16, help="sequences generated together")
    p.add_argument("--length", type=int, default=None, help="tokens per sample (default: the training length)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--energy", default=None, metavar="KIND:RUN",
                   help="EDLM: ar:AR_RUN (full AR joint), coar:AR_RUN (carry-over), nce:NCE_RUN, lm:NAME (any causal "
                        "LM: smollm2-135m, gemma3-270m, a Hugging Face folder or name, gguf:FILE, an AR run) or "
                        "py:MODULE:FUNCTION (a function of the candidates' texts returning log-weights; -inf vetoes)")
    p.add_argument("--energy-form", default=None, choices=("residual", "product"),
                   help="lm: energies: residual (default, the paper's: target p_LM, the proposal only proposes) or "
                        "product (target mu * p_LM^scale: the LM reranks the proposal's draws); docs/method.md 3e")
    p.add_argument("--energy-scale", type=float, default=None, metavar="LAMBDA",
                   help="lm: and py: energies: lambda > 0 (default 1). residual: target mu^(1-lambda) p_LM^lambda; "
                        "product: mu * p_LM^lambda; py: mu * exp(lambda * r)")
    p.add_argument("--k", type=int, default=4, help="EDLM candidates per step (with --k-policy ess: on the first "
                   "EDLM step)")
    p.add_argument("--k-policy", default="fixed", choices=("fixed", "ess"),
                   help="fixed: --k candidates on every EDLM step. ess: adapt k between steps from the effective "
                        "sample size of the step before: halve it when the weights are near-uniform (the energy "
                        "does not discriminate, the step is as good as plain MDLM), down to --k-min, double it up "
                        "to --k-max when one candidate takes all the weight (more candidates would find better "
                        "ones); each sequence by its own ESS, so a sample does not depend on its batch. Each step "
                        "stays an exact importance-resampling step for its k; the "
                        "summary reports mean_k and energy_candidates_per_sample. On exact languages it matched, "
                        "and did not beat, fixed k on every step at equal energy cost (docs/studies/adaptive_k.md)")
    p.add_argument("--k-max", type=int, default=16, help="with --k-policy ess: the most candidates a step draws")
    p.add_argument("--k-min", type=int, default=2, help="with --k-policy ess: the fewest (2 keeps the energy on; "
                   "1 lets one step of flat weights end a sequence's energy for the rest of the run)")
    p.add_argument("--min-unmask", type=int, default=1, metavar="M",
                   help="EDLM: run the energy only for sequences that unmask at least M positions on a step, the "
                        "others take a plain MDLM draw (the energy corrects tokens fixed TOGETHER; one token from "
                        "the denoiser's marginal needs none if the denoiser is good). Random unmasking only")
    p.add_argument("--window", type=parse_window, default=(0.0, 1.0), metavar="T_LO,T_HI",
                   help="EDLM on steps whose t is in [T_LO, T_HI] (t runs from 1, all masked, to 0); 'none' = "
                        "plain MDLM. Measured on order-2/3 languages (docs/studies/window_look.md): the "
                        "energy pays mostly on the late steps, 0,0.5 keeps 70-90%% of every step's gain at half "
                        "the energy cost; a window at the start (the paper's 0.8,1) gave no measurable gain")
    p.add_argument("--temperature", type=float, default=1.0,
                   help="the ENERGY's temperature tau in the EDLM weights softmax(-E/tau); 1 = exact. For the tokens' "
                        "temperature see --token-temperature")
    p.add_argument("--token-temperature", type=float, default=1.0, metavar="T",
                   help="sharpen every token draw (MDLM, EDLM candidates, confidence, AR): p(v)^(1/T), renormalised; "
                        "T < 1 sharper, lower entropy. 1 = the model's own distribution")
    p.add_argument("--top-p", type=float, default=1.0, metavar="P",
                   help="nucleus: draw each token from the smallest set of most probable tokens with mass >= P "
                        "(after --token-temperature); 1 = all tokens")
    p.add_argument("--unmask", default="random", choices=unmask_names(), help=unmask_help())
    p.add_argument("--prefix", default=None, help="text to keep fixed at the start of every sample")
    p.add_argument("--infill", default=None, metavar="TEMPLATE",
                   help="infilling (MDLM/EDLM): text with blanks, [MASK] = one token to generate, [MASK*N] = N, "
                        "e.g. 'ab[MASK*5]cd'; the other tokens stay fixed and the template sets the length")
    p.add_argument("--stride", type=int, default=None, metavar="S",
                   help="semi-autoregressive (MDLM/EDLM): generate --length beyond the context in blocks of the "
                        "training length, each S new tokens on with the ones before as fixed context")
    p.add_argument("--trace", default=None, metavar="FILE.html",
                   help="write one self-contained HTML page animating the denoising of the first samples "
                        "(t per step; for EDLM the ESS and the winning candidate)")
    p.add_argument("--trace-num", type=int, default=4, help="samples the --trace page shows")
    p.add_argument("--trace-mdlm", action="store_true",
                   help="with --energy and --trace: also trace plain MDLM from the same seed, side by side")
    p.add_argument("--cache", action=argparse.BooleanOptionalAction, default=True,
                   help="reuse the denoiser output while x_t does not change (--no-cache: recompute it every step)")
    p.add_argument("--sampler", default="step", choices=("step", "first-hit", "threshold"),
                   help="step: MDLM's --steps time grid. first-hit (EXACT): continuous-time sampling, one network call "
                        "per generated token, the step sampler's law as the steps grow without bound (--steps does "
                        "not apply). threshold (APPROXIMATE): each step unmasks every position whose most probable "
                        "token is above --threshold, at least one, so the steps adapt (--steps does not apply). All "
                        "three take --energy (docs/fast_samplers.md)")
    p.add_argument("--threshold", type=float, default=0.9, metavar="P",
                   help="with --sampler threshold: the top probability above which a position unmasks")
    p.add_argument("--block-size", type=int, default=None, metavar="B",
                   help="block-wise generation: the tokens to generate are denoised in left-to-right blocks of B, "
                        "each with the sampler's --steps, later blocks still masked beside them (also inside "
                        "--stride windows)")
    p.add_argument("--kv-cache", default="none", choices=("none", "prefix", "dual"),
                   help="cached block decoding (needs --block-size or --stride): a block's network calls reuse the "
                        "keys and values of the positions before the block (prefix) or on both sides (dual), "
                        "recomputed at each block's start and every --kv-refresh calls. APPROXIMATE for these "
                        "bidirectional models: the kept keys and values go stale as the block fills in "
                        "(--kv-refresh 1 is exact and no faster). Not --cache/--no-cache, which is about reusing "
                        "the output when x_t did not change")
    p.add_argument("--kv-refresh", type=int, default=0, metavar="N",
                   help="with --kv-cache: recompute the kept keys and values every N network calls of a block "
                        "(0 = only at the block's start)")
    p.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp32"),
                   help="network precision: auto = bf16 autocast on a GPU, fp32 on the CPU (draws are float64)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the denoiser trunk (CUDA graphs on a GPU): faster after a one-off compile")
    p.add_argument("--device", default="auto")
    p.add_argument("--quiet", action="store_true")
    old_spelling(p, "--energy-min-unmask", "--min-unmask")
    add_accept_data_change(p)
    return p


def check_args(args) -> None:
    """Every option in range and --out usable, before a model is loaded."""
    for name in ("num", "steps", "k", "k_max", "k_min", "min_unmask", "batch_size"):
        at_least("--" + name.replace("_", "-"), getattr(args, name), 1)
    at_least("--length", args.length, 1, optional=True)
    at_most("--steps", args.steps, MAX_LOOP, STEPS_WHY)
    seed("--seed", args.seed)
    at_least("--stride", args.stride, 1, optional=True)
    at_least("--trace-num", args.trace_num, 1)
    at_least("--block-size", args.block_size, 1, optional=True)
    at_least("--kv-refresh", args.kv_refresh, 0)
    finite_in("--threshold", args.threshold, lo=0, hi=1)
    if args.kv_cache != "none" and args.stride is None and args.block_size is None:
        raise EdlmError(f"--kv-cache {args.kv_cache} keeps the keys and values outside the block being denoised: "
                        "give --block-size B (blocks within the sample) or --stride S (semi-autoregressive windows)")
    if args.sampler != "step" and args.unmask != "random":
        raise EdlmError(f"--unmask {args.unmask} is a rule of the step sampler; --sampler {args.sampler} chooses "
                        "its own positions")
    if args.infill is not None and args.prefix is not None:
        raise EdlmError("--prefix and --infill: give one (write the prefix into the --infill template)")
    if args.infill is not None and args.length is not None:
        raise EdlmError("--infill sets the length (its tokens plus its blanks): leave out --length")
    if args.k_policy != "fixed" and not args.energy:
        raise EdlmError("--k-policy adapts the EDLM candidates per step: give --energy")
    if args.k_policy != "fixed" and args.k > args.k_max:
        raise EdlmError(f"--k {args.k} is the first step's k under --k-policy {args.k_policy}: give at most "
                        f"--k-max {args.k_max}")
    if args.k_min > args.k_max:
        raise EdlmError(f"--k-min {args.k_min} is more than --k-max {args.k_max}")
    if args.min_unmask > 1 and (not args.energy or not UNMASKINGS[args.unmask].min_unmask):
        ok = " or ".join(n for n, u in UNMASKINGS.items() if u.min_unmask)
        raise EdlmError("--min-unmask skips the energy on steps that unmask few positions: give --energy, "
                        f"with --unmask {ok}")
    if args.trace_mdlm and not (args.trace and args.energy):
        raise EdlmError("--trace-mdlm puts plain MDLM beside EDLM on the --trace page: give --trace and --energy")
    out_file("--trace", args.trace)
    temperature("--temperature", args.temperature)
    finite_in("--token-temperature", args.token_temperature, lo=0, lo_open=True)
    finite_in("--top-p", args.top_p, lo=0, hi=1, lo_open=True)
    out_file("--out", args.out)
    partial = partial_path(args.out)
    if locked_by_other(partial):
        raise EdlmError(f"another `edlm sample` is writing {args.out} now ({partial} is locked): wait for it to "
                        "finish, or choose another --out")
    if os.path.islink(partial):
        raise EdlmError(f"{partial} is a symbolic link, where `edlm sample` writes rows of its own: remove it, then "
                        "rerun")
    if os.path.lexists(partial):
        raise EdlmError(f"{partial} holds rows of an interrupted `edlm sample`: rename it to keep them (or delete "
                        "it), then rerun")


def partial_path(out) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".partial")


class RowStream:
    """Rows appended to OUT.partial batch by batch (each write whole, so a killed process keeps them), renamed to
    OUT once all are written. OUT.partial is created new (never an existing file or a link) and locked while
    written, so a second `edlm sample` to the same OUT refuses instead of mixing its rows in. The file gets the
    umask's normal permissions, like any new file."""

    def __init__(self, out):
        self.out, self.partial, self.f, self.n = Path(out), partial_path(out), None, 0

    def write(self, rows: list[dict]) -> None:
        if self.f is None:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            try:
                self.f = AppendFile(self.partial, new=True)
            except FileExistsError:
                raise EdlmError(f"{self.partial} appeared while this sampler ran: another `edlm sample` is writing "
                                f"{self.out}; wait for it to finish, or choose another --out") from None
            self.f.lock()
        self.f.write("".join(json.dumps(r) + "\n" for r in rows))
        self.n += len(rows)

    def finish(self) -> None:
        if self.f is None:
            self.write([])
        self.f.sync()
        try:
            os.replace(self.partial, self.out)  # while still locked: no other sampler takes the name meanwhile
        except OSError as e:
            raise write_error(e, self.out) from None
        self.f.close()

    def abandon(self) -> bool:
        """After a failure: remove an empty partial file; -> whether finished rows are kept in it."""
        if self.f is None:
            return False
        if self.n == 0:
            self.partial.unlink(missing_ok=True)
        self.f.close()
        return self.n > 0


def run(args):
    """A thin layer over edlm.Run.sample: the flags checked (and named in errors) here, rows streamed."""
    from edlm.api import load

    check_args(args)
    energy = energy_choice(args)  # an lm: / py: energy's options checked, a py: function imported, before loading
    try:
        run_ = load(args.ckpt, pick_device(args.device), accept_data_change=args.accept_data_change)
    except EdlmError as e:
        raise in_flag_terms(e, OPTIONS, dash=True) from None
    prefix = run_.encode(args.prefix, what="--prefix") if args.prefix else None
    if args.energy and run_.meta.objective == "ar":
        raise EdlmError("--energy applies to an MDLM run (--ckpt MDLM_RUN); this run is autoregressive")
    block = min(run_.meta.train.seq_len, run_.model.cfg.max_len)
    if (args.infill or args.stride or args.trace) and run_.meta.objective != "mdlm":
        flag = "--infill" if args.infill else ("--stride" if args.stride else "--trace")
        raise EdlmError(f"{flag} applies to an MDLM run (--ckpt MDLM_RUN, with or without --energy); "
                        "this run is autoregressive")
    infill = None
    if args.infill is not None:
        from edlm.sampling.infill import Infill

        infill = Infill.from_template(args.infill, lambda text: run_.encode(text, what="--infill"))
    length = infill.length if infill is not None else args.length
    if args.stride is None and length is not None and length > run_.model.cfg.max_len:
        what = f"--infill has {length} tokens, which" if infill is not None else f"--length {length}"
        raise EdlmError(f"{what} exceeds what the model allows ({run_.model.cfg.max_len}); to generate longer, add "
                        f"--stride S (semi-autoregressive blocks of {block} tokens, e.g. --stride {block // 2})")
    if args.stride is not None and args.stride > block:
        raise EdlmError(f"--stride {args.stride} is more than the block length {block} (the training length): "
                        f"give 1..{block}")
    stream = RowStream(args.out)
    policy = args.k_policy != "fixed"
    try:
        out = _sample(run_, num=args.num, steps=args.steps, energy=energy, k=args.k, window=args.window,
                      temperature=args.temperature, prefix=prefix, seed=args.seed, length=args.length,
                      batch_size=args.batch_size, precision=args.precision, compile=args.compile,
                      cache=args.cache, quiet=args.quiet, on_batch=stream.write,
                      unmask=args.unmask, infill=infill, stride=args.stride, trace=args.trace,
                      trace_num=args.trace_num, trace_mdlm=args.trace_mdlm, k_policy=args.k_policy,
                      k_max=args.k_max if policy else None, k_min=args.k_min if policy else None,
                      min_unmask=args.min_unmask, sampler=args.sampler, threshold=args.threshold,
                      block_size=args.block_size, kv_cache=args.kv_cache, kv_refresh=args.kv_refresh,
                      token_temperature=args.token_temperature, top_p=args.top_p)
        stream.finish()
    except BaseException as e:
        if stream.abandon():
            kept = f"the {stream.n} rows finished before the failure are in {stream.partial}"
            if isinstance(e, EdlmError):  # still one line
                raise EdlmError(f"{e} ({kept})") from None
            print(f"edlm sample: {kept}", file=sys.stderr)
        raise
    return {**out.summary, "out": str(args.out)}


def energy_choice(args):
    """--energy with --energy-form / --energy-scale (edlm.api.energies.energy_with): a spec string, or the
    EnergyChoice of an lm: / py: energy, its options checked and a py: function imported before loading."""
    from edlm.api.energies import energy_with

    try:
        return energy_with(args.energy, args.energy_form, args.energy_scale)
    except EdlmError as e:
        raise in_flag_terms(e, OPTIONS, dash=True) from None


def _sample(run_, **kw):
    """Run.sample, its errors in flag terms (the library names options as `stride`, `length`, ...)."""
    try:
        return run_.sample(**kw)
    except EdlmError as e:
        raise in_flag_terms(e, OPTIONS, dash=True) from None


def writes(args) -> Paths:
    return Paths({"--out": args.out, "--trace": args.trace}, {"--ckpt": args.ckpt, "--energy": energy_run(args.energy)})
