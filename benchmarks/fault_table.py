"""The fault table of issue 16: the real CLI (subprocesses, CPU, `micro` preset) on damaged run folders and
corpora, bad options, NaN/divergence, pickle payloads (group "security": crafted pickles through convert and
resume), resource bounds and edge values (group "bounds": jobs too big for the machine's memory, loop
counts past sense, unknown devices, 64-bit seeds, denormal temperatures, malformed sample rows), two
trainers on one folder, a run's binding to its corpus and config (binding_cases), and SIGKILLs.

Each case records the exit code, whether stderr is ONE clear error line (no traceback), and whether data was
lost (a file of the run or corpus changed or vanished other than the one the case damaged; for cases that
must succeed: a restart from zero, duplicated metric rows or a lost sample). Then N trainings are SIGKILLed at
seeded random moments (saves every step, so many land mid-save) and resumed: final weights byte-identical
and loss logs bit-identical to an uninterrupted run?

    PYTHONPATH=src python benchmarks/fault_table.py --out results/fault_table.json [--kills 14]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MICRO = ["--preset", "micro", "--data", "synthetic", "--quiet"]
ENV = {**os.environ, "EDLM_NO_PROGRESS": "1"}


def edlm(*argv, timeout=300, env=None):
    r = subprocess.run([sys.executable, "-m", "edlm", *map(str, argv)], env=env or ENV, capture_output=True,
                       text=True, timeout=timeout)
    return r.returncode, r.stderr


def snapshot(folder: Path, skip=()) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name not in skip}


def damage(p: Path, how: str) -> None:
    if how == "missing":
        p.unlink()
    elif how == "truncated":
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    elif how == "zeroed":
        p.write_bytes(bytes(p.stat().st_size))
    elif how == "flipped":
        b = bytearray(p.read_bytes())
        b[len(b) // 2] ^= 0x10
        p.write_bytes(bytes(b))
    elif how == "garbage":
        p.write_bytes(b"\x00not json{")
    elif how == "empty-json":
        p.write_text("{}")


def one_clear_error(rc: int, err: str) -> bool:
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("edlm: note:")]
    return rc != 0 and len(lines) == 1 and ": error: " in lines[0] and "Traceback" not in err


def losses(run: Path) -> list:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows if "loss" in r]


def latest(run: Path) -> Path:
    return run / json.loads((run / "latest.json").read_text())["dir"]


class Table:
    def __init__(self, work: Path):
        self.work, self.rows = work, []

    def add(self, group, case, rc, err, lost, expect="error", ok=None):
        clear = one_clear_error(rc, err) if expect == "error" else rc == 0
        self.rows.append({"group": group, "case": case, "rc": rc, "expect": expect,
                          "as_expected": clear if ok is None else (clear and ok), "data_lost": bool(lost),
                          "stderr": err.strip().splitlines()[-1][:300] if err.strip() else ""})
        r = self.rows[-1]
        print(f"{'ok ' if r['as_expected'] else 'BAD'} rc={rc} lost={int(r['data_lost'])} {group}: {case}  "
              f"| {r['stderr'][:150]}", file=sys.stderr, flush=True)

    def copy(self, src: Path, name: str) -> Path:
        dst = self.work / "cases" / name
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(src, dst)
        return dst


def run_cases(t: Table, base: Path, ref: Path, ar: Path, data: Path) -> None:
    resume = ["train", "--resume", "--max_steps", "6", "--quiet", "--out"]
    for name in ["model.safetensors", "ema.safetensors", "optim.pt", "rng.safetensors", "state.json"]:
        for how in ["missing", "truncated", "zeroed", "flipped"]:
            cmds = [("resume", lambda r: [*resume, r])]
            if name in ("ema.safetensors", "state.json"):
                cmds += [("sample", lambda r: ["sample", "--ckpt", r, "--out", r.parent / f"{r.name}.jsonl"]),
                         ("eval", lambda r: ["eval", "nelbo", "--ckpt", r, "--max-blocks", "4"])]
            for cmd, argv in cmds:
                run = t.copy(base, f"{cmd}-{name}-{how}")
                damage(latest(run) / name, how)
                before = snapshot(run)
                rc, err = edlm(*argv(run))
                t.add("checkpoint", f"{cmd} with {name} {how}", rc, err, snapshot(run, ("train.lock",)) != before)
    for how in ["garbage", "empty-json", "truncated"]:
        run = t.copy(base, f"latest-{how}")
        damage(run / "latest.json", how)
        before = snapshot(run)
        rc, err = edlm(*resume, run)
        t.add("checkpoint", f"resume with latest.json {how}", rc, err, snapshot(run) != before)
    run = t.copy(base, "latest-deleted")
    (run / "latest.json").unlink()
    rc, err = edlm(*resume, run)
    t.add("checkpoint", "resume with latest.json deleted (continues from newest complete)", rc, err,
          rc == 0 and losses(run) != losses(ref), expect="ok")
    for how in ["missing", "garbage", "empty-json"]:
        for cmd in ("resume", "sample"):
            run = t.copy(base, f"runjson-{cmd}-{how}")
            damage(run / "run.json", how)
            before = snapshot(run)
            argv = [*resume, run] if cmd == "resume" else ["sample", "--ckpt", run, "--out", run.parent / "x.jsonl"]
            rc, err = edlm(*argv)
            t.add("checkpoint", f"{cmd} with run.json {how}", rc, err, snapshot(run) != before)
    run = t.copy(base, "metrics-torn")
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "lo')
    rc, err = edlm(*resume, run)
    t.add("checkpoint", "resume with a torn last metrics line", rc, err, rc == 0 and losses(run) != losses(ref),
          expect="ok")
    run = t.copy(base, "metrics-middle")
    lines = (run / "metrics.jsonl").read_text().splitlines()
    lines[1] = lines[1][:9]
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    before = snapshot(run)
    rc, err = edlm(*resume, run)
    t.add("checkpoint", "resume with a damaged middle metrics line", rc, err, snapshot(run) != before)

    # corpus files
    for split, cmd in (("train", "train"), ("valid", "train"), ("test", "eval")):
        for how in ["missing", "truncated", "zeroed", "flipped"]:
            root = t.work / "cases" / f"data-{split}-{how}"
            shutil.rmtree(root, ignore_errors=True)
            shutil.copytree(data / "synthetic", root / "synthetic")
            damage(root / "synthetic" / f"{split}.bin", how)
            ENV["EDLM_DATA"] = str(root)
            out = root / "run"
            argv = ["train", "--out", out, *MICRO, "--max_steps", "2"] if cmd == "train" else \
                ["eval", "nelbo", "--ckpt", base, "--max-blocks", "4"]
            rc, err = edlm(*argv)
            t.add("corpus", f"{cmd} with {split}.bin {how}", rc, err, (out / "checkpoints").exists())
    for how in ["missing", "garbage", "empty-json"]:
        root = t.work / "cases" / f"data-manifest-{how}"
        shutil.rmtree(root, ignore_errors=True)
        shutil.copytree(data / "synthetic", root / "synthetic")
        damage(root / "synthetic" / "manifest.json", how)
        ENV["EDLM_DATA"] = str(root)
        rc, err = edlm("eval", "nelbo", "--ckpt", base, "--max-blocks", "4")
        t.add("corpus", f"eval with manifest.json {how}", rc, err, False)
    ENV["EDLM_DATA"] = str(data)

    # bad options: each must fail before any work and leave nothing behind
    scratch = t.work / "cases" / "opts"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    (scratch / "afile").write_text("x")
    out = scratch / "s.jsonl"
    sample = ["sample", "--ckpt", base, "--num", "2", "--steps", "2", "--out", out]
    opts = [(sample + x) for x in (["--prefix", "a!b"], ["--prefix", "é"], ["--length", "-5"], ["--length", "0"],
                                   ["--temperature", "nan"], ["--temperature", "inf"], ["--temperature", "0"],
                                   ["--num", "0"], ["--batch-size", "0"], ["--k", "0"], ["--steps", "0"])]
    opts += [["sample", "--ckpt", base, "--out", scratch], ["sample", "--ckpt", base, "--out", scratch / "afile" / "x"],
             ["eval", "nelbo", "--ckpt", base, "--json-out", scratch]]
    opts += [["eval", "nelbo", "--ckpt", base, *x] for x in (["--t-samples", "0"], ["--max-blocks", "0"],
                                                            ["--batch-size", "0"], ["--logz-samples", "1"])]
    tr = ["train", "--out", scratch / "r", *MICRO]
    opts += [tr + x for x in (["--save_every", "0"], ["--log_every", "0"], ["--batch_size", "0"],
                              ["--max_steps", "0"], ["--lr", "-1"], ["--lr", "nan"], ["--lr", "inf"],
                              ["--seq_len", "0"], ["--grad_clip", "-1"], ["--ema", "1"], ["--betas", "0.9", "1.5"])]
    opts += [["train", "--out", scratch / "afile", *MICRO]]
    bench = ["bench", "--mdlm", base, "--out", scratch / "b", "--quiet"]
    opts += [bench + x for x in (["--num", "0"], ["--batch-size", "0"], ["--steps", "0"], ["--k", "0,2"])]
    opts += [["bench", "--mdlm", ar, "--out", scratch / "b", "--steps", "2", "--num", "2"]]
    for argv in opts:
        before = snapshot(scratch)
        rc, err = edlm(*argv)
        case = " ".join(str(a) for a in argv[:2]) + " " + " ".join(str(a) for a in argv[-2:])
        t.add("options", case.replace(str(t.work), "W"), rc, err, snapshot(scratch) != before or
              any(p.name in ("r", "b", "s.jsonl", "s.jsonl.partial") for p in scratch.iterdir()))
    run = t.copy(base, "resume-save0")
    before = snapshot(run)
    rc, err = edlm("train", "--out", run, "--resume", "--save_every", "0", "--quiet")
    t.add("options", "train --resume --save_every 0", rc, err, snapshot(run) != before)

    # NaN / divergence
    for lr in ("1e6", "10"):
        out = t.work / "cases" / f"nan-{lr}"
        shutil.rmtree(out, ignore_errors=True)
        rc, err = edlm("train", "--out", out, *MICRO, "--lr", lr, "--save_every", "1")
        lost = (out / "latest.json").exists() or "last good" in err
        t.add("nan", f"train --lr {lr} --save_every 1 (stops, saves nothing, claims no good checkpoint)", rc, err, lost)
    rc, err = edlm("train", "--out", out, "--resume", "--lr", "0.002", "--max_steps", "4", "--quiet")
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    t.add("nan", "then --resume --lr 0.002 (the given lr wins)", rc, err, False, expect="ok",
          ok=[r.get("lr") for r in rows if "lr" in r][-1] == 0.002)

    # pickle payloads (a run folder from someone else)
    for name in ("optim.pt", "rng.pt"):
        run = t.copy(base, f"pickle-{name}")
        marker = run.parent / f"PWNED-{name}"
        marker.unlink(missing_ok=True)
        code = (f"import torch, os, json, hashlib, pathlib\nclass P:\n def __reduce__(self): return (os.mkdir, "
                f"({str(marker)!r},))\nd = pathlib.Path({str(latest(run))!r})\n"
                f"torch.save({{'torch': torch.get_rng_state(), 'noise': P(), 'state': {{}}, 'param_groups': []}}, "
                f"d / {name!r})\n")
        subprocess.run([sys.executable, "-c", code], check=True, env=ENV)
        if name == "rng.pt":  # the old checkpoint format: rng.pt, no file list
            s = json.loads((latest(run) / "state.json").read_text())
            for k in ("files", "format", "identity"):
                s.pop(k, None)
            (latest(run) / "state.json").write_text(json.dumps(s))
            (run / "latest.json").write_text(json.dumps({"step": s["step"], "dir": f"checkpoints/{latest(run).name}"}))
        else:  # forge the hashes too
            s = json.loads((latest(run) / "state.json").read_text())
            data = (latest(run) / name).read_bytes()
            s["files"][name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            (latest(run) / "state.json").write_text(json.dumps(s))
            lj = json.loads((run / "latest.json").read_text())
            lj["state_sha256"] = hashlib.sha256((latest(run) / "state.json").read_bytes()).hexdigest()
            (run / "latest.json").write_text(json.dumps(lj))
        rc, err = edlm(*resume, run)
        t.add("pickle", f"resume with a code-running {name}", rc, err, False, ok=not marker.exists())

    # two trainers on one folder, then SIGKILL of the first and resume
    run = t.work / "cases" / "two"
    shutil.rmtree(run, ignore_errors=True)
    first = subprocess.Popen([sys.executable, "-m", "edlm", "train", "--out", str(run), *MICRO, "--max_steps",
                              "100000", "--save_every", "3"], env=ENV, stderr=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL)
    while not (run / "latest.json").exists():
        time.sleep(0.1)
    rc, err = edlm("train", "--out", run, "--resume", "--quiet")
    t.add("lock", "second train --resume on a live run", rc, err, False)
    first.send_signal(signal.SIGKILL)
    first.wait()
    step = json.loads((run / "latest.json").read_text())["step"]
    rc, err = edlm("train", "--out", run, "--resume", "--max_steps", step + 2, "--quiet")
    steps = [s for s, _ in losses(run)]
    t.add("lock", "resume after SIGKILL of the lock holder (stale lock)", rc, err,
          steps != list(range(1, step + 3)), expect="ok")

    # sampling killed mid-run keeps finished batches
    out = t.work / "cases" / "stream.jsonl"
    for p in (out, out.with_name(out.name + ".partial")):
        p.unlink(missing_ok=True)
    p = subprocess.Popen([sys.executable, "-m", "edlm", "sample", "--ckpt", str(base), "--num", "100000",
                          "--batch-size", "8", "--steps", "4", "--quiet", "--out", str(out)], env=ENV,
                         stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    partial = out.with_name(out.name + ".partial")
    while not partial.exists() or partial.stat().st_size < 20000:
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    rows = partial.read_text().splitlines()
    complete = [r for r in rows if r.endswith("}")]
    t.add("sample", f"sample SIGKILLed mid-run ({len(complete)} rows kept in OUT.partial)", 0, "", len(complete) < 8,
          expect="ok")


def _u(x: str) -> bytes:  # BINUNICODE
    return b"X" + len(x.encode()).to_bytes(4, "little") + x.encode()


def _g(module: str, name: str) -> bytes:  # GLOBAL
    return f"c{module}\n{name}\n".encode()


def _call(f: bytes, *args: bytes) -> bytes:  # REDUCE
    return f + b"(" + b"".join(args) + b"tR"


def payloads(marker: Path) -> dict:
    """{case: (pickle protocol, opcodes)}: each would mkdir `marker` if its code ran (the last is a trick on
    torch's persistent ids, not code)."""
    code = _u(f"__import__('os').mkdir({str(marker)!r})")
    return {
        "a dotted torch._utils name reaching eval": (4, _call(_call(
            _g("torch._utils", "_rebuild_tensor.__builtins__.get"), _u("eval")), code)),
        "a dotted name reaching _import_dotted_name": (4, _call(_call(_call(
            _g("torch._utils", "_rebuild_tensor_v2.__globals__.get"), _u("_import_dotted_name")), _u("os.mkdir")),
            _u(str(marker)))),
        "a dotted name under a listed omegaconf class": (4, _call(_call(
            _g("omegaconf.dictconfig", "DictConfig.__init__.__builtins__.get"), _u("exec")), code)),
        "REDUCE builtins.eval": (2, _call(_g("builtins", "eval"), code)),
        "REDUCE os.system": (2, _call(_g("os", "system"), _u(f"mkdir {marker}"))),
        "REDUCE getattr(__import__('os'), 'mkdir')": (2, _call(_call(_g("builtins", "getattr"), _call(
            _g("builtins", "__import__"), _u("os")), _u("mkdir")), _u(str(marker)))),
        "eval nested in a list": (2, b"}" + _u("config") + b"](" + _call(_g("builtins", "eval"), code) + b"tas"),
        "STACK_GLOBAL builtins.eval": (4, b"\x8c\x08builtins\x8c\x04eval\x93(" + code + b"tR"),
        "INST builtins.eval (protocol 0)": (0, b"(" + code + b"ibuiltins\neval\n"),
        "a persistent id that is not a storage": (2, b"(" + _u("module") + _u(str(marker)) + _u("s") * 2 + b"tQ"),
    }


def crafted(path: Path, payload: tuple, legacy: bool, key: str = "hyper_parameters") -> Path:
    """A torch file (zip, or the legacy format) whose object pickle is {'state_dict': {}, key: payload}, written
    byte by byte: no pickler writes dotted names, STACK_GLOBAL in protocol 2, or INST."""
    import pickle
    import types

    import torch

    proto, ops = payload
    raw = (b"\x80" + bytes([proto]) if proto else b"") + b"}(" + _u("state_dict") + b"}" + _u(key) + ops + b"u."

    class Raw:  # torch.save's pickle_module: torch's own container around our object pickle
        def __init__(self, f, protocol=2):
            self.f = f

        def dump(self, obj):
            self.f.write(raw)

    torch.save({}, path, pickle_module=types.SimpleNamespace(__name__="raw", Pickler=Raw, dump=pickle.dump),
               _use_new_zipfile_serialization=not legacy)
    return path


def _plant(run: Path, name: str) -> None:
    """Make the run folder accept the planted file: rng.pt as the old format (no file list, no state hash);
    optim.pt with state.json and latest.json hashes forged to match, as someone editing the folder can."""
    d = latest(run)
    s = json.loads((d / "state.json").read_text())
    if name == "rng.pt":
        (d / "rng.safetensors").unlink()
        for k in ("files", "format", "identity"):
            s.pop(k, None)
        (d / "state.json").write_text(json.dumps(s))
        (run / "latest.json").write_text(json.dumps({"step": s["step"], "dir": f"checkpoints/{d.name}"}))
        return
    data = (d / name).read_bytes()
    s["files"][name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (d / "state.json").write_text(json.dumps(s))
    lj = json.loads((run / "latest.json").read_text())
    lj["state_sha256"] = hashlib.sha256((d / "state.json").read_bytes()).hexdigest()
    (run / "latest.json").write_text(json.dumps(lj))


def security_cases(t: Table, base: Path) -> None:
    """Crafted pickles through the real CLI: `edlm convert` of a .ckpt (zip and legacy format) and of a
    pytorch_model.bin, and `train --resume` with a planted optim.pt (hashes forged) or an old-format rng.pt.
    As expected: one clear error saying it refuses, no marker (no code ran), no output folder, run unchanged."""
    root = t.work / "cases" / "security"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    kinds = list(payloads(root))
    for i, kind in enumerate(kinds):
        for legacy in (False, True):
            d = root / f"ckpt-{i}-{int(legacy)}"
            d.mkdir()
            src = crafted(d / "evil.ckpt", payloads(d / "PWNED")[kind], legacy)
            rc, err = edlm("convert", "--from", "mdlm-ar-lightning", "--src", src, "--out", d / "run", "--n-heads", 2)
            t.add("security", f"convert a {'legacy' if legacy else 'zip'} .ckpt with {kind}", rc, err,
                  (d / "run").exists(), ok=not (d / "PWNED").exists() and "refusing to load" in err)
    for i, kind in enumerate(kinds[:2] + kinds[6:8]):
        d = root / f"bin-{i}"
        (d / "hub").mkdir(parents=True)
        crafted(d / "hub" / "pytorch_model.bin", payloads(d / "PWNED")[kind], False, key="w")
        rc, err = edlm("convert", "--from", "mdlm-hf", "--src", d / "hub", "--out", d / "run", "--bos-id", 0)
        t.add("security", f"convert an HF folder whose pytorch_model.bin has {kind}", rc, err, (d / "run").exists(),
              ok=not (d / "PWNED").exists() and "refusing to load" in err)
    for name in ("optim.pt", "rng.pt"):
        for i, kind in enumerate([kinds[0], kinds[4], kinds[7], kinds[8]]):
            run = t.copy(base, f"security-{name}-{i}")
            marker = run.parent / f"PWNED-{name}-{i}"
            shutil.rmtree(marker, ignore_errors=True)
            crafted(latest(run) / name, payloads(marker)[kind], legacy=name == "rng.pt", key="state")
            _plant(run, name)
            before = snapshot(run)
            rc, err = edlm("train", "--resume", "--max_steps", "6", "--quiet", "--out", run)
            t.add("security", f"resume with an {name} holding {kind}", rc, err,
                  snapshot(run, ("train.lock",)) != before, ok=not marker.exists() and "refusing to load" in err)


def binding_cases(t: Table) -> None:
    """A run bound to its corpus and config (docs/reliability.md): another text prepared under the corpus's
    name, run.json edited, a resume that changes options, an old run folder; corpus sources that never end
    (/dev/zero, a FIFO) or exceed the cap. Uses its own data root (EDLM_DATA restored at the end)."""
    import resource

    work = t.work / "cases" / "binding"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    saved_data = ENV.get("EDLM_DATA")
    ENV["EDLM_DATA"] = str(work / "data")
    words = "alpha beta gamma delta river stone light north quiet table".split()
    rng = random.Random(0)
    text = "\n\n".join(" ".join(rng.choice(words) for _ in range(40)) for _ in range(60))
    (work / "a.txt").write_text(text)
    (work / "b.txt").write_text(text.translate(str.maketrans("aeiou", "eioua")))  # same shape, other text
    micro = ["--preset", "micro", "--data", "textfile", "--quiet"]
    assert edlm("data", "prepare", "textfile", "--source", work / "a.txt")[0] == 0
    base = work / "base"
    assert edlm("train", "--out", base, *micro, "--max_steps", "2", "--save_every", "2")[0] == 0
    commands = {"sample": lambda r: ["sample", "--ckpt", r, "--out", r.parent / f"{r.name}.jsonl", "--num", "2",
                                     "--steps", "2"],
                "eval": lambda r: ["eval", "nelbo", "--ckpt", r, "--max-blocks", "2"],
                "resume": lambda r: ["train", "--out", r, "--resume", "--max_steps", "4", "--quiet"]}

    assert edlm("data", "prepare", "textfile", "--source", work / "b.txt", "--force")[0] == 0
    for cmd, argv in commands.items():
        run = t.copy(base, f"binding-data-{cmd}")
        before = snapshot(run, ("train.lock",))
        rc, err = edlm(*argv(run))
        t.add("binding", f"{cmd} after textfile re-prepared from other text", rc, err,
              snapshot(run, ("train.lock",)) != before)
        rc, err = edlm(*argv(run), "--accept-data-change")
        t.add("binding", f"{cmd} --accept-data-change after the same (a warning, then it works)", rc, err, False,
              expect="ok", ok="edlm: warning: corpus 'textfile' changed" in err)
    assert edlm("data", "prepare", "textfile", "--source", work / "a.txt", "--force")[0] == 0

    for field in ("train.schedule", "train.t_eps", "train.seq_len", "train.lr", "diffusion", "tokenizer"):
        for cmd in ("sample", "resume"):
            run = t.copy(base, f"binding-edit-{field}-{cmd}")
            meta = json.loads((run / "run.json").read_text())
            top, _, sub = field.partition(".")
            box, key = (meta[top], sub) if sub else (meta, top)
            old = box[key]
            box[key] = {"train.schedule": "cosine", "train.t_eps": 0.002, "train.seq_len": 8, "train.lr": 0.01,
                        "diffusion": "elsewhere", "tokenizer": "gpt2"}[field]
            assert box[key] != old
            (run / "run.json").write_text(json.dumps(meta))
            before = snapshot(run, ("train.lock",))
            rc, err = edlm(*commands[cmd](run))
            t.add("binding", f"{cmd} with run.json {field} edited", rc, err, snapshot(run, ("train.lock",)) != before)

    run = t.copy(base, "binding-resume-lr")
    rc, err = edlm("train", "--out", run, "--resume", "--lr", "0.001", "--max_steps", "4", "--quiet")
    rc2, err2 = edlm(*commands["sample"](run))
    t.add("binding", "resume --lr 0.001 (an overridable option), then sample", max(rc, rc2), err + err2, False,
          expect="ok")

    run = t.copy(base, "binding-old-format")  # as written before runs were bound
    meta = json.loads((run / "run.json").read_text())
    for k in ("data_sha256", "tokenizer_sha256", "data_request"):
        meta.pop(k)
    (run / "run.json").write_text(json.dumps(meta))
    state_p = latest(run) / "state.json"
    state = json.loads(state_p.read_text())
    state["identity"] = {k: meta[k] for k in ("objective", "data", "mask_id", "model")}
    state_p.write_text(json.dumps(state))
    lj = json.loads((run / "latest.json").read_text())
    lj["state_sha256"] = hashlib.sha256(state_p.read_bytes()).hexdigest()
    (run / "latest.json").write_text(json.dumps(lj))
    rc, err = edlm(*commands["sample"](run))
    rc2, err2 = edlm(*commands["resume"](run))
    t.add("binding", "sample, then resume, of a run folder from before the binding", max(rc, rc2), err + err2,
          False, expect="ok", ok=bool(json.loads((run / "run.json").read_text()).get("data_sha256")))

    def limit():  # a source read whole must not take the machine down with it
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

    os.mkfifo(work / "pipe.txt")
    (work / "big.txt").write_text(text)
    for case, src, env in (("/dev/zero", "/dev/zero", {}), ("a FIFO without writer", work / "pipe.txt", {}),
                           (f"a {len(text) >> 10} KiB file over a 2 KiB cap", work / "big.txt",
                            {"EDLM_MAX_SOURCE_BYTES": "2K"})):
        before = snapshot(work / "data")
        t0 = time.time()
        try:
            r = subprocess.run([sys.executable, "-m", "edlm", "data", "prepare", "textfile", "--source", str(src),
                                "--force"], env={**ENV, **env}, capture_output=True, text=True, timeout=60,
                               preexec_fn=limit)
            rc, err = r.returncode, r.stderr
        except subprocess.TimeoutExpired:
            rc, err = -1, "timed out after 60 s"
        t.add("binding", f"data prepare textfile --source {case} ({time.time() - t0:.1f} s)", rc, err,
              snapshot(work / "data") != before)
    ENV["EDLM_DATA"] = saved_data


def bounds_cases(t: Table, base: Path, ar: Path) -> None:
    """Resource bounds and edge values through the real CLI: each must be one clear error before any work (a
    hang past 120 s counts as a failure, exit code 124), and leave nothing in the scratch folder. The sizes
    are beyond any machine's memory (k = 1e9 candidates, 1e11 samples), so the memory check must refuse them."""
    root = t.work / "cases" / "bounds"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    huge, energy = str(10 ** 11), ["--energy", f"ar:{ar}"]
    sample = ["sample", "--ckpt", base, "--num", "2", "--steps", "2", "--out", root / "s.jsonl"]
    nelbo = ["eval", "nelbo", "--ckpt", base, "--max-blocks", "4", "--json-out", root / "e.json"]
    bench = ["bench", "--mdlm", base, "--ar", ar, "--methods", "mdlm,edlm-ar", "--num", "2", "--steps", "2",
             "--out", root / "b", "--quiet"]
    cases = [(sample, x) for x in (
        ["--device", "tpu"], ["--device", "cuda:x"], ["--seed", str(2 ** 64)], ["--temperature", "1e-310"],
        [*energy, "--temperature", "1e-45"], [*energy, "--k", str(10 ** 9)],
        [*energy, "--k-policy", "ess", "--k-max", str(10 ** 9)], ["--steps", huge], ["--num", huge],
        ["--num", huge, "--batch-size", huge], ["--length", huge, "--stride", "8"],
        ["--infill", f"ab[MASK*{huge}]"], ["--infill", "ab[MASK*" + "9" * 5000 + "]"])]
    cases += [(nelbo, x) for x in (
        ["--device", "tpu"], ["--seed", str(2 ** 64)], [*energy, "--steps", "2", "--temperature", "1e-45"],
        ["--steps", huge], ["--t-samples", huge], [*energy, "--steps", "2", "--bound-draws", huge],
        [*energy, "--steps", "2", "--k", str(10 ** 9)], [*energy, "--logz-samples", str(10 ** 9)])]
    cases += [(bench, x) for x in (["--seed", str(2 ** 64)], ["--steps", f"2,{huge}"], ["--k", f"2,{10 ** 9}"])]
    rows = {"text-int": {"text": 5}, "ids-str": {"ids": "abc"}, "ids-nested": {"ids": [[1, 2], [3]]},
            "corpus-int": {"ids": [1, 2], "corpus": 5}, "seconds-nan": {"ids": [1, 2], "seconds": float("nan")}}
    for name, row in rows.items():
        f = t.work / "cases" / f"rows-{name}.jsonl"
        f.write_text(json.dumps(row) + "\n")
        cases.append((["eval", "samples", "--samples", f, "--evaluator", "true", "--quiet"], [f"({name})"]))
    for cmd, extra in cases:
        argv = cmd + [a for a in extra if not a.startswith("(")]
        try:
            rc, err = edlm(*argv, timeout=120)
        except subprocess.TimeoutExpired:
            rc, err = 124, "hung: no answer in 120 s"
        label = " ".join([*cmd[:2 if cmd[0] == "eval" else 1], *(a if len(a) <= 40 else a[:40] + "..." for a in extra)])
        t.add("bounds", label.replace(str(ar), "AR"), rc, err, any(root.iterdir()))


TMPFS_DRIVER = """import hashlib, json, os, subprocess, sys
disk, argv = sys.argv[1], sys.argv[2:]
r = subprocess.run([sys.executable, "-m", "edlm", *argv], capture_output=True, text=True)
files = {os.path.relpath(os.path.join(d, f), disk): hashlib.sha256(open(os.path.join(d, f), "rb").read()).hexdigest()
         for d, _, fs in os.walk(disk) for f in fs}
print(json.dumps({"rc": r.returncode, "err": r.stderr, "files": files}))
"""


def on_tmpfs(work: Path, name: str, setup: str, argv, size="256k", env=None):
    """`edlm argv` run in a fresh tmpfs of `size` (a private mount namespace: it vanishes with the process), after
    the shell `setup` ran there. -> (rc, stderr, {file: sha256} left on it), or None where mounting is not allowed."""
    disk = work / "tmpfs" / name
    disk.mkdir(parents=True, exist_ok=True)
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-m", "mount", "-t", "tmpfs", "tmpfs",
                                                          str(disk)], capture_output=True).returncode != 0:
        return None
    driver = work / "tmpfs" / "driver.py"
    driver.write_text(TMPFS_DRIVER)
    script = (f"mount -t tmpfs -o size={size} tmpfs {disk} && cd {disk} && {setup} && "
              f'exec {sys.executable} {driver} {disk} "$@"')
    r = subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", *map(str, argv)], capture_output=True, text=True,
                       env=env or ENV, timeout=600)
    res = json.loads(r.stdout.splitlines()[-1])
    return res["rc"], res["err"], res["files"]


def writes_cases(t: Table, base: Path, ar: Path, data: Path) -> None:
    """Writes stay where they belong: no output over an input or through a link; a full disk, a read-only
    cache, a folder where a file belongs, an empty path and two samplers on one --out end cleanly."""
    g, cases = "writes", t.work / "cases"
    sample = ["sample", "--num", "2", "--steps", "2", "--quiet", "--ckpt"]
    victim = cases / "victim.txt"
    # outputs over inputs: the run (or input) must come out byte-identical
    samples = cases / "w-s.jsonl"
    assert edlm(*sample, base, "--out", samples)[0] == 0
    for case, argv in [
        ("sample --out RUN/run.json", lambda r: [*sample, r, "--out", r / "run.json"]),
        ("sample --out RUN/../RUN/latest.json", lambda r: [*sample, r, "--out", r / ".." / r.name / "latest.json"]),
        ("sample --out LINK (to RUN/run.json)", lambda r: [*sample, r, "--out", _link(r.parent / "w-link",
                                                                                   r / "run.json")]),
        ("sample --trace RUN/t.html", lambda r: [*sample, r, "--out", cases / "w-o.jsonl", "--trace", r / "t.html"]),
        ("sample --energy ar:AR --out AR/run.json", lambda r: [*sample, r, "--energy", f"ar:{ar}", "--out",
                                                               ar / "run.json"]),
        ("sample --out X --json-out X", lambda r: [*sample, r, "--out", cases / "w-x", "--json-out", cases / "w-x"]),
        ("eval samples --samples S --json-out S", lambda r: ["eval", "samples", "--samples", samples, "--evaluator",
                                                             "true", "--json-out", samples]),
        ("eval nelbo --json-out RUN/run.json", lambda r: ["eval", "nelbo", "--ckpt", r, "--json-out", r / "run.json"]),
        ("plot RUN --out RUN/metrics.jsonl", lambda r: ["plot", r, "--out", r / "metrics.jsonl"]),
        ("bench --out RUN", lambda r: ["bench", "--mdlm", r, "--steps", "2", "--num", "2", "--quiet", "--out", r]),
        ("convert --src SRC --out SRC/converted", lambda r: ["convert", "--from", "mdlm-hf", "--src", r, "--out",
                                                             r / "converted"]),
        ("train --diffusion RUN --out RUN/nce", lambda r: ["train", *MICRO, "--objective", "nce", "--diffusion", r,
                                                           "--out", r / "nce"]),
        ("train --json-out OUT/summary.json", lambda r: ["train", *MICRO, "--out", cases / "w-new", "--json-out",
                                                         cases / "w-new" / "summary.json"]),
        ("data prepare --json-out CORPUS/manifest.json", lambda r: ["data", "prepare", "synthetic", "--root",
                                                                    r.parent / "w-cache", "--json-out", r.parent /
                                                                    "w-cache" / "synthetic" / "manifest.json"]),
        ("sample --out ''", lambda r: [*sample, r, "--out", ""]),
    ]:
        run, cache = t.copy(base, "w-run"), t.copy(data, "w-cache")  # a copy of the cache: old code damaged it
        (run.parent / "w-link").unlink(missing_ok=True)
        before = (snapshot(run), snapshot(ar), snapshot(cache), snapshot(data), samples.read_bytes())
        rc, err = edlm(*argv(run))
        after = (snapshot(run), snapshot(ar), snapshot(cache), snapshot(data), samples.read_bytes())
        t.add(g, case, rc, err, after != before)
    # links, and the wrong kind of entry, in a run folder
    for case, damage_run, argv in [
        ("train --resume with train.lock a link to a file outside", lambda r: _link(r / "train.lock", victim),
         lambda r: ["train", "--resume", "--max_steps", "5", "--quiet", "--out", r]),
        ("train --resume with metrics.jsonl a folder", lambda r: _swap(r / "metrics.jsonl", "folder"),
         lambda r: ["train", "--resume", "--max_steps", "5", "--quiet", "--out", r]),
        ("train --resume with checkpoints a file", lambda r: _swap(r / "checkpoints", "file"),
         lambda r: ["train", "--resume", "--max_steps", "5", "--quiet", "--out", r]),
        ("sample with run.json a folder", lambda r: _swap(r / "run.json", "folder"),
         lambda r: [*sample, r, "--out", cases / "w-o.jsonl"]),
        ("sample with OUT.partial a dangling link", lambda r: _link(cases / "w-o.jsonl.partial", cases / "nowhere"),
         lambda r: [*sample, r, "--out", cases / "w-o.jsonl"]),
    ]:
        victim.write_text("precious\n")
        run = t.copy(base, "w-run")
        (cases / "w-o.jsonl.partial").unlink(missing_ok=True)
        damage_run(run)
        before = snapshot(run)
        rc, err = edlm(*argv(run))
        t.add(g, case, rc, err, snapshot(run) != before or victim.read_text() != "precious\n"
              or (cases / "nowhere").exists())
    (cases / "w-o.jsonl.partial").unlink(missing_ok=True)
    afile = cases / "w-afile"
    afile.write_text("kept\n")
    rc, err = edlm("data", "prepare", "markov3", env={**ENV, "EDLM_DATA": str(afile / "cache")})
    t.add(g, "data prepare with $EDLM_DATA under a file", rc, err, afile.read_text() != "kept\n")
    # a full disk and a read-only cache, for real (tmpfs)
    fill = "echo old > s.jsonl && echo old > j.json && (head -c 1000000 /dev/zero > pad 2>/dev/null || true)"
    old = hashlib.sha256(b"old\n").hexdigest()
    for case, setup, argv, left, size in [
        ("full disk: sample --out (old OUT kept)", fill, [*sample, base, "--num", "64", "--out", "s.jsonl"],
         {"s.jsonl": old, "j.json": old}, "256k"),
        ("full disk: --json-out (old file kept)", fill, [*sample, base, "--out", cases / "w-o.jsonl", "--json-out",
                                                         "j.json"], {"s.jsonl": old, "j.json": old}, "256k"),
        ("full disk: train saving a checkpoint", "true", ["train", *MICRO, "--max_steps", "2", "--out", "r"], None,
         "256k"),
        ("full disk: data prepare", "true", ["data", "prepare", "markov3", "--root", "."], {}, "256k"),
        ("read-only data cache: data prepare", "mount -o remount,ro .", ["data", "prepare", "markov3", "--root",
                                                                         "."], {}, "256k"),
    ]:
        got = on_tmpfs(t.work, case.split(":")[0].replace(" ", "-") + str(len(t.rows)), setup, argv, size)
        if got is None:
            print(f"skip {g}: {case} (no private mount namespace here)", file=sys.stderr)
            continue
        rc, err, files = got
        files = {k: v for k, v in files.items() if k != "pad"}
        lost = any(".tmp" in f or ".partial" in f or f.endswith("train.lock") for f in files) if left is None \
            else files != left
        t.add(g, case, rc, err, lost)
    got = on_tmpfs(t.work, "ro-hit", f"cp -r {data / 'synthetic'} . && mount -o remount,ro .",
                   ["train", *MICRO, "--max_steps", "2", "--out", cases / "w-ro-train"], size="16m",
                   env={**ENV, "EDLM_DATA": "."})
    if got is not None:
        t.add(g, "read-only data cache holding the corpus: train reads it", got[0], got[1], False, expect="ok")
    # two samplers racing to one --out: each ends cleanly, the file is one sampler's rows, whole
    race = cases / "w-race.jsonl"
    race.unlink(missing_ok=True)
    argv = [sys.executable, "-m", "edlm", *sample, str(base), "--num", "200", "--batch-size", "10", "--steps",
            "8", "--out", str(race)]
    ps = [subprocess.Popen([*argv, "--seed", str(s)], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           text=True) for s in (1, 2)]
    res = [(p.communicate()[1], p.returncode)[::-1] for p in ps]
    rows = [json.loads(x) for x in race.read_text().splitlines()] if race.exists() else []
    whole = len(rows) == 200 and not race.with_name(race.name + ".partial").exists()
    for i, (rc, err) in enumerate(res):
        t.add(g, f"two samplers, one --out: sampler {i + 1} ({'wrote' if rc == 0 else 'refused'})", rc, err,
              not whole, expect="ok" if rc == 0 else "error")


def _link(p: Path, target: Path) -> Path:
    p.unlink(missing_ok=True)
    p.symlink_to(target)
    return p


def _swap(p: Path, kind: str) -> None:
    """Put a folder (kind="folder") or a file in place of p."""
    shutil.rmtree(p) if p.is_dir() else p.unlink()
    if kind == "folder":
        p.mkdir()
        (p / "x").write_text("kept\n")
    else:
        p.write_text("kept\n")


def kill_trials(work: Path, n: int, seed: int) -> dict:
    """SIGKILL a training at seeded random moments (saves every step), resume, compare with a straight run."""
    steps = 40
    args = [*MICRO, "--max_steps", str(steps), "--save_every", "1", "--log_every", "1"]
    ref = work / "kill" / "ref"
    shutil.rmtree(work / "kill", ignore_errors=True)
    assert edlm("train", "--out", ref, *args)[0] == 0
    rng, out = random.Random(seed), []
    for i in range(n):
        run = work / "kill" / f"k{i}"
        p = subprocess.Popen([sys.executable, "-m", "edlm", "train", "--out", str(run), *args], env=ENV,
                             stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        while not (run / "metrics.jsonl").exists() and p.poll() is None:  # started training
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 1.5))
        p.send_signal(signal.SIGKILL)
        killed = p.wait() == -signal.SIGKILL
        at = json.loads((run / "latest.json").read_text())["step"] if (run / "latest.json").exists() else 0
        rc, err = edlm("train", "--out", run, "--resume", "--quiet")
        same_w = rc == 0 and (latest(run) / "model.safetensors").read_bytes() == \
            (latest(ref) / "model.safetensors").read_bytes()
        out.append({"killed": killed, "killed_after_checkpoint": at, "resume_rc": rc, "weights_identical": same_w,
                    "losses_identical": rc == 0 and losses(run) == losses(ref), "error": err.strip()[-200:]})
        print(f"kill {i}: after step {at}: rc={rc} weights={same_w} losses={out[-1]['losses_identical']}",
              file=sys.stderr, flush=True)
    return {"trials": n, "killed": sum(r["killed"] for r in out),
            "weights_identical": sum(r["weights_identical"] for r in out),
            "losses_identical": sum(r["losses_identical"] for r in out),
            "unloadable": sum(r["resume_rc"] != 0 for r in out), "rows": out}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="results/fault_table.json")
    ap.add_argument("--kills", type=int, default=14)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default=None, help="scratch folder (default: a temp folder, removed at the end)")
    a = ap.parse_args()
    work = Path(a.work or tempfile.mkdtemp(prefix="edlm-faults-"))
    data = work / "data"
    ENV["EDLM_DATA"] = str(data)
    t0 = time.time()
    assert edlm("data", "prepare", "synthetic")[0] == 0
    base, ref, ar = work / "base", work / "ref", work / "ar"
    for p in (base, ref, ar):
        shutil.rmtree(p, ignore_errors=True)
    assert edlm("train", "--out", base, *MICRO, "--max_steps", "4", "--save_every", "2")[0] == 0
    assert edlm("train", "--out", ref, *MICRO, "--max_steps", "6", "--save_every", "2")[0] == 0
    assert edlm("train", "--out", ar, "--objective", "ar", *MICRO, "--max_steps", "2")[0] == 0
    t = Table(work)
    run_cases(t, base, ref, ar, data)
    security_cases(t, base)
    binding_cases(t)
    bounds_cases(t, base, ar)
    writes_cases(t, base, ar, data)
    kills = kill_trials(work, a.kills, a.seed) if a.kills else None
    groups = {}
    for r in t.rows:
        g = groups.setdefault(r["group"], {"cases": 0, "as_expected": 0, "data_lost": 0, "exit_codes": {}})
        g["cases"] += 1
        g["as_expected"] += r["as_expected"]
        g["data_lost"] += r["data_lost"]
        g["exit_codes"][str(r["rc"])] = g["exit_codes"].get(str(r["rc"]), 0) + 1
    total = {k: sum(g[k] for g in groups.values()) for k in ("cases", "as_expected", "data_lost")}
    res = {"total": total, "groups": groups, "kills": kills, "seconds": round(time.time() - t0),
           "edlm": __import__("edlm").__file__, "rows": t.rows}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps({"total": total, "groups": groups,
                      "kills": {k: v for k, v in (kills or {}).items() if k != "rows"}}))
    if not a.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
