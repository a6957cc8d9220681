"""What binds a run folder to its corpus and to its config, so that neither can change without a word.

Data. A run names its corpus (run.json "data"), and a corpus can be prepared again under the same name from
other text (`edlm data prepare textfile --source other.txt --force`). So run.json also records, when the run
is created, `data_sha256` (data/manifest.py manifest_sha256: the split files' checksums, sizes, vocabulary
and tokenizer; not when or from which path the corpus was built) and `tokenizer_sha256` (the vocabulary the
ids stand for), with `data_request` (how it was prepared, to name the fix). check_data compares them with the
corpus as prepared now: a difference is one EdlmError naming the fix, or with accept_data_change a warning on
stderr. Hashing a manifest reads a few KB: the manifest's own checksums bind the data, and every split load
checks its file against them.

Config. Each checkpoint's state.json keeps "identity": run.json as it was when the checkpoint was written,
less its history ("resumed"). check_identity compares run.json with it, so an edit of any field
(train.schedule, train.t_eps, diffusion, tokenizer, the data hashes, the model) is one error. The fields a
resume may change (train/config.py RESUME_OVERRIDABLE, the per-device batch on another device count, the
data binding after an accepted data change) differ legitimately from the checkpoint a resume started from
until it saves again: they pass when run.json's "resumed" history records the change (_explained).
Checkpoints written before the full record kept only objective, data, mask_id and model: those four are
checked, as before; checkpoints before format 2 kept nothing.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from edlm.config.train import RESUME_OVERRIDABLE
from edlm.errors import EdlmError

HASHES = ("data_sha256", "tokenizer_sha256")
DATA_KEYS = (*HASHES, "data_request")
"""run.json's binding to its corpus; an accepted change on resume replaces them together"""
RESUMABLE = (*RESUME_OVERRIDABLE, "batch_size")
"""train fields a resume may change (batch_size: the per-device batch, re-derived for the device count)"""
NOT_BOUND = ("resumed", "step", "edlm_version")
"""run.json entries a checkpoint does not bind: history, the loaded step, the version that made the run"""
_NESTED = ("train", "model")  # compared field by field, so an error names e.g. train.schedule


def manifest_binding(m: dict, root=None) -> dict:
    """DATA_KEYS of a corpus manifest: what run.json records when a run is made from it."""
    from edlm.data.manifest import manifest_sha256
    from edlm.data.tokenizers import tokenizer_sha256

    out = {"data_sha256": manifest_sha256(m), "tokenizer_sha256": tokenizer_sha256(m, root),
           "data_request": m.get("request")}
    return {k: v for k, v in out.items() if v is not None}


def corpus_binding(name: str, root=None) -> dict | None:
    """DATA_KEYS of prepared corpus `name` as it is now, or None if it is not prepared (or its manifest does
    not read: whatever loads the corpus next says so, with the fix)."""
    from edlm.data.manifest import corpus_dir, read_manifest

    try:
        m = read_manifest(corpus_dir(name, root))
    except EdlmError:  # not a corpus name (a converted run may name anything)
        return None
    return manifest_binding(m, root) if m is not None else None


def _prepare_command(name: str, request: dict | None) -> str:
    req = request or {}
    flags = "".join(f" --{k.replace('_', '-')} {req[k]}" for k in ("source", "tokenizer", "train_tokens")
                    if req.get(k) is not None and not (k == "tokenizer" and name != "textfile"))
    return f"`edlm data prepare {name}{flags} --force`"


def check_data(meta: dict, run, accept: bool = False) -> dict | None:
    """Whether run `meta` (run.json's dict) still fits its corpus as prepared now. -> None when it does (or
    cannot be told: a run made before runs were bound, a corpus not prepared here); the corpus's DATA_KEYS
    when they differ and `accept`, after a warning on stderr. A difference without `accept` is an EdlmError."""
    recorded = {k: meta[k] for k in HASHES if meta.get(k)}
    now = corpus_binding(meta.get("data")) if recorded else None
    if not now:
        return None
    changed = [k for k in recorded if now.get(k) and now[k] != recorded[k]]
    if not changed:
        return None
    what = " and ".join({"data_sha256": "content", "tokenizer_sha256": "tokenizer"}[k] for k in changed)
    k, name = changed[0], meta["data"]
    msg = (f"corpus {name!r} changed since run {run} was made from it ({what} hash {recorded[k][:12]} then, "
           f"{now[k][:12]} now): the run's results on it would not be the ones it was made for")
    if not accept:
        raise EdlmError(f"{msg}. Prepare the corpus it was made from again "
                        f"({_prepare_command(name, meta.get('data_request'))}), or pass `accept_data_change=True` "
                        "to use it as it is now")
    print(f"edlm: warning: {msg}; using it as it is now, as accepted", file=sys.stderr)
    return now


def rebind(meta: dict, run, accept: bool = False) -> dict:
    """On resume: the DATA_KEYS run.json should hold from now on (check_data first: an unaccepted change is
    an error). Those it lacks (a run made before runs were bound) are filled in, with a note; all of them
    when a change was accepted. apply_overrides records each change under "resumed"."""
    accepted = check_data(meta, run, accept)
    now = corpus_binding(meta.get("data")) or {}
    if now and not meta.get("data_sha256"):
        print(f"edlm: note: run {run} was made before runs recorded their corpus's hash; from now on it is bound "
              f"to corpus {meta.get('data')!r} as prepared now", file=sys.stderr)
    return {k: v for k, v in now.items() if accepted or meta.get(k) is None}


def identity(meta: dict) -> dict:
    """What a checkpoint binds of run.json (see the module doc), as JSON values."""
    d = {k: v for k, v in meta.items() if k not in NOT_BOUND}
    train = d.get("train") or {}
    if "global_batch" not in d and "batch_size" in train:  # runs made before global_batch was kept
        d["global_batch"] = train["batch_size"] * train.get("grad_accum", 1)
    return json.loads(json.dumps(d))


def _diff(saved: dict, now: dict, full: bool) -> list[str]:
    keys = sorted(set(saved) | set(now)) if full else list(saved)  # old records: only their four keys
    out = []
    for k in keys:
        a, b = saved.get(k), now.get(k)
        if k in _NESTED and full and isinstance(a, dict) and isinstance(b, dict):
            out += [f"{k}.{f}" for f in sorted(set(a) | set(b)) if a.get(f) != b.get(f)]
        elif a != b:
            out.append(k)
    return out


def _explained(path: str, saved: dict, now: dict, meta: dict) -> bool:
    """A difference that resumes made and recorded: from the checkpoint's value, follow each recorded change
    (old -> new, in order) that starts at the value reached; the end must be run.json's value. Changes chain
    (each one's old value is the one before's new), so from any value on the chain this ends at the last
    one, and an edited value, which no recorded change leads to, never passes."""
    top, _, field = path.partition(".")
    if not ((top == "train" and field in RESUMABLE) or path in DATA_KEYS):
        return False
    key = field if top == "train" else path
    get = (lambda d: (d.get("train") or {}).get(field)) if top == "train" else (lambda d: d.get(path))
    value = get(saved)
    for entry in meta.get("resumed") or []:
        change = (entry.get("changed") or {}).get(key)
        if change is not None and json.loads(json.dumps(change[0])) == value:
            value = json.loads(json.dumps(change[1]))
    return value == get(now)


def check_identity(meta: dict, state: dict, run) -> None:
    """run.json (`meta`) still describes the run its checkpoint (verified state.json) was written for."""
    saved = state.get("identity")
    if saved is None:  # checkpoints before format 2 recorded nothing
        return
    now = identity(meta)
    diff = [p for p in _diff(saved, now, "train" in saved) if not _explained(p, saved, now, meta)]
    if diff:
        verb = "differs" if len(diff) == 1 else "differ"
        raise EdlmError(f"{Path(run) / 'run.json'} no longer matches its checkpoint of step {state.get('step')} "
                        f"({', '.join(diff)} {verb}): it was edited or damaged; restore it from a backup")
