"""No code runs from a data file: crafted pickles through every loader edlm has.

Loaders: `edlm convert --from mdlm-ar-lightning` (.ckpt), `--from mdlm-hf` (pytorch_model.bin), `train --resume`
(optim.pt, an older run's rng.pt), Hugging Face evaluators (a folder with pytorch_model.bin). Each payload would
create a marker folder if any of its code ran; every case asserts there is none and one clear EdlmError (the CLI:
exit 2, one line, no traceback). Payloads are written byte by byte, in a torch zip file (data.pkl) and in the
legacy (non-zip) format, so they can hold what no pickler writes: dotted names resolved along attribute paths
(the protocol-4 find_class), STACK_GLOBAL, INST/OBJ (protocol 0), EXT codes, persistent ids.
"""

from __future__ import annotations

import copyreg
import json
import os
import pickle
import shutil
import struct
import sys
import types

import pytest
import torch

from conftest import micro_configs
from edlm.errors import EdlmError
from edlm.runs.convert import convert
from faultlib import assert_one_clear_error, cli, latest_dir
from test_convert import BOS, H, ar_ref, lightning_ckpt

# ------------------------------------------------------------------------------------------------
# A pickle assembler (opcodes as bytes) and the payloads
# ------------------------------------------------------------------------------------------------


def U(s: str) -> bytes:  # BINUNICODE
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def SU(s: str) -> bytes:  # SHORT_BINUNICODE (protocol 4)
    b = s.encode()
    return b"\x8c" + bytes([len(b)]) + b


def G(module: str, name: str) -> bytes:  # GLOBAL
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def call(func: bytes, *args: bytes) -> bytes:  # func(*args) by REDUCE
    return func + b"(" + b"".join(args) + b"tR"


def code(marker) -> str:
    return f"__import__('os').mkdir({str(marker)!r})"


EXT_CODE = 0x7E57  # an extension code registered for os.mkdir while the EXT payload is read (see `ext`)

PAYLOADS = {
    # The audit's finding: protocol 4 resolves dots in a GLOBAL's name along attribute paths.
    "dotted-builtins-eval": lambda m: (4, call(call(G("torch._utils", "_rebuild_tensor.__builtins__.get"),
                                                    U("eval")), U(code(m)))),
    "dotted-globals-import": lambda m: (4, call(call(call(G("torch._utils", "_rebuild_tensor_v2.__globals__.get"),
                                                          U("_import_dotted_name")), U("os.mkdir")), U(str(m)))),
    "dotted-allowlisted-class": lambda m: (4, call(call(G("omegaconf.dictconfig",
                                                          "DictConfig.__setstate__.__builtins__.get"), U("exec")),
                                                   U(code(m)))),
    "module-split-differently": lambda m: (4, call(call(G("torch", "_utils._rebuild_tensor.__builtins__.get"),
                                                        U("eval")), U(code(m)))),
    "builtins-eval": lambda m: (2, call(G("builtins", "eval"), U(code(m)))),
    "py2-builtin-exec": lambda m: (2, call(G("__builtin__", "exec"), U(code(m)))),
    "os-system": lambda m: (2, call(G("os", "system"), U(f"mkdir {m}"))),
    "posix-mkdir": lambda m: (2, call(G("posix", "mkdir"), U(str(m)))),
    "getattr-import": lambda m: (2, call(call(G("builtins", "getattr"), call(G("builtins", "__import__"), U("os")),
                                             U("mkdir")), U(str(m)))),
    "nested-in-hyper-parameters": lambda m: (2, b"}" + U("config") + b"]" + b"(" + U("x") +
                                             call(G("builtins", "eval"), U(code(m))) + b"t" + b"a" + b"s"),
    "newobj-build-real-class": lambda m: (2, G(Gadget.__module__, "Gadget") + b")\x81" + U(str(m)) + b"b"),
    "stack-global": lambda m: (4, SU("builtins") + SU("eval") + b"\x93" + b"(" + U(code(m)) + b"tR"),
    "inst-protocol-0": lambda m: (0, b"(" + U(code(m)) + b"ibuiltins\neval\n"),
    "obj": lambda m: (2, b"(" + G("builtins", "eval") + U(code(m)) + b"o"),
    "ext": lambda m: (2, b"\x83" + struct.pack("<H", EXT_CODE) + b"(" + U(str(m)) + b"tR"),  # EXT2
    "persistent-id-storage-type": lambda m: (2, b"(" + U("storage") + call(G("builtins", "eval"), U(code(m))) +
                                             U("0") + U("cpu") + b"K\x01tQ"),
    "persistent-id-module": lambda m: (2, b"(" + U("module") + U(str(m)) + U("src") + U("src") + b"tQ"),
    "text-persistent-id": lambda m: (0, b"P" + str(m).encode() + b"\n"),
}


class Gadget:
    """A real, importable class whose __setstate__ runs code: a file naming it must not reach it."""

    def __setstate__(self, state):
        os.mkdir(state)


def body(payload: bytes, proto: int, key: str = "hyper_parameters") -> bytes:
    """A Lightning-shaped top level {'state_dict': {}, key: payload}, then STOP."""
    head = b"\x80" + bytes([proto]) if proto >= 2 else b""
    return head + b"}(" + U("state_dict") + b"}" + U(key) + payload + b"u."


class _RawPickler:
    """A pickle_module for torch.save that writes `raw` as the object pickle (the rest is torch's own)."""

    raw = b""

    def __init__(self, f, protocol=2):
        self.f = f

    def dump(self, obj):
        self.f.write(self.raw)


def write_torch_file(path, raw: bytes, legacy: bool):
    mod = types.SimpleNamespace(__name__="raw", Pickler=type("P", (_RawPickler,), {"raw": raw}), dump=pickle.dump)
    torch.save({}, path, pickle_module=mod, _use_new_zipfile_serialization=not legacy)
    return path


@pytest.fixture
def ext():
    """EXT payloads name an entry of copyreg's extension registry: register os.mkdir there meanwhile."""
    copyreg.add_extension("os", "mkdir", EXT_CODE)
    yield
    copyreg.remove_extension("os", "mkdir", EXT_CODE)


@pytest.fixture
def bait(monkeypatch, tmp_path):
    """An importable omegaconf.dictconfig.DictConfig whose construction or state setting creates tmp/BAIT:
    resolving the real class (not edlm's inert stand-in) for a listed name would show."""
    mark = tmp_path / "BAIT"

    class DictConfig:
        def __new__(cls, *a, **k):
            os.makedirs(mark, exist_ok=True)
            return object.__new__(cls)

        def __setstate__(self, state):
            os.makedirs(mark, exist_ok=True)

    mod = types.ModuleType("omegaconf.dictconfig")
    mod.DictConfig = DictConfig
    monkeypatch.setitem(sys.modules, "omegaconf", types.ModuleType("omegaconf"))
    monkeypatch.setitem(sys.modules, "omegaconf.dictconfig", mod)
    return mark


CASES = sorted(PAYLOADS)


def crafted(tmp_path, name, legacy, file="evil.ckpt", key="hyper_parameters"):
    marker = tmp_path / "PWNED"
    proto, payload = PAYLOADS[name](marker)
    return write_torch_file(tmp_path / file, body(payload, proto, key), legacy), marker


def _needle(name: str) -> str:
    """What the refusal must name: the global, or the instruction."""
    return {"stack-global": "STACK_GLOBAL", "ext": "EXT2", "text-persistent-id": "PERSID",
            "dotted-builtins-eval": "torch._utils._rebuild_tensor.__builtins__.get",
            "dotted-globals-import": "torch._utils._rebuild_tensor_v2.__globals__.get",
            "dotted-allowlisted-class": "omegaconf.dictconfig.DictConfig.__setstate__.__builtins__.get",
            "module-split-differently": "torch._utils._rebuild_tensor.__builtins__.get",
            "builtins-eval": "builtins.eval", "py2-builtin-exec": "builtins.exec", "os-system": "os.system",
            "posix-mkdir": "posix.mkdir", "getattr-import": "builtins.getattr",
            "nested-in-hyper-parameters": "builtins.eval", "newobj-build-real-class": f"{Gadget.__module__}.Gadget",
            "inst-protocol-0": "builtins.eval", "obj": "builtins.eval",
            "persistent-id-storage-type": "builtins.eval", "persistent-id-module": "persistent_load"}[name]


@pytest.mark.parametrize("name", [n for n in CASES if n not in ("persistent-id-module", "text-persistent-id")])
def test_each_payload_does_run_code_when_unpickled_without_restriction(tmp_path, ext, bait, name):
    """The marker is a valid proof: Python's own unpickler runs every payload (the persistent-id cases are
    tricks on torch's loader, not code)."""
    import io

    marker = tmp_path / "PWNED"
    proto, payload = PAYLOADS[name](marker)
    up = pickle.Unpickler(io.BytesIO(body(payload, proto)))
    up.persistent_load = lambda pid: pid
    try:
        up.load()
    except Exception:  # noqa: BLE001 - the payload ran; what it returned need not make sense
        pass
    assert marker.exists() or bait.exists()


# ------------------------------------------------------------------------------------------------
# edlm convert --from mdlm-ar-lightning
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("name", CASES)
def test_crafted_lightning_checkpoint_is_refused_without_running(tmp_path, data_root, ext, bait, name, legacy):
    src, marker = crafted(tmp_path, name, legacy)
    with pytest.raises(EdlmError) as e:
        convert("mdlm-ar-lightning", src, tmp_path / "run", bos_id=BOS, n_heads=H)
    msg = str(e.value)
    assert not marker.exists() and not bait.exists(), msg
    assert msg.startswith(f"refusing to load {src}"), msg
    assert _needle(name) in msg and "could run code" in msg and "weights.ckpt" in msg, msg
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name", CASES)
def test_cli_convert_of_a_crafted_checkpoint_is_one_line_exit_2(tmp_path, data_root, capsys, ext, name):
    src, marker = crafted(tmp_path, name, legacy=False)
    rc, err = cli(capsys, ["convert", "--from", "mdlm-ar-lightning", "--src", src, "--out", tmp_path / "run",
                           "--bos-id", BOS, "--n-heads", H])
    assert_one_clear_error(rc, err, "refusing to load", _needle(name), "could run code")
    assert "not a Lightning checkpoint" not in err
    assert not marker.exists() and not (tmp_path / "run").exists()


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_payload_nested_in_a_real_checkpoint_is_refused(tmp_path, data_root, legacy):
    """A well-formed checkpoint (tensors, EMA, omegaconf-like config) with code-running objects deep inside its
    hyper-parameters, written by the ordinary pickler."""
    marker = tmp_path / "PWNED"
    ck_path = lightning_ckpt(tmp_path / "ok.ckpt", ar_ref(), hparams="plain")
    ck = torch.load(ck_path, weights_only=True)
    ck["hyper_parameters"]["config"]["callbacks"] = [{"x": (Gadget, _Reduce(os.mkdir, str(marker)))}]
    torch.save(ck, tmp_path / "evil.ckpt", _use_new_zipfile_serialization=not legacy)
    with pytest.raises(EdlmError, match=r"refusing to load .*it names \S*(Gadget|posix\.mkdir)"):
        convert("mdlm-ar-lightning", tmp_path / "evil.ckpt", tmp_path / "run", bos_id=BOS)
    assert not marker.exists() and not (tmp_path / "run").exists()


def test_refusal_advice_for_a_trusted_file_gives_a_convertible_checkpoint(tmp_path, data_root):
    """Hyper-parameters holding a class outside the list (here a harmless Fraction): one error whose recipe, run
    on a file one trusts, keeps the weights; that file converts with --n-heads."""
    import re
    import subprocess
    from fractions import Fraction

    ck_path = lightning_ckpt(tmp_path / "ok.ckpt", ar_ref(), hparams="plain")
    ck = torch.load(ck_path, weights_only=True)
    ck["hyper_parameters"]["config"]["optim"] = {"lr": Fraction(1, 3)}
    torch.save(ck, tmp_path / "mine.ckpt")
    with pytest.raises(EdlmError, match="it names fractions.Fraction") as e:
        convert("mdlm-ar-lightning", tmp_path / "mine.ckpt", tmp_path / "run", bos_id=BOS)
    recipe = re.search(r'python -c "(.*?)"', str(e.value)).group(1)
    subprocess.run([sys.executable, "-c", recipe], cwd=tmp_path, check=True)
    s = convert("mdlm-ar-lightning", tmp_path / "weights.ckpt", tmp_path / "run", bos_id=BOS, n_heads=H)
    assert s["ema"] and s["n_heads"] == H


class _Reduce:
    def __init__(self, fn, arg):
        self.fn, self.arg = fn, arg

    def __reduce__(self):
        return (self.fn, (self.arg,))


def test_allowed_names_resolve_to_inert_objects_not_the_importable_class(tmp_path, data_root, bait):
    """omegaconf's DictConfig is on the list; even when a module of that name is importable, the file gets
    edlm's inert stand-in: constructing it, REDUCE-ing it and setting its state run nothing."""
    dc = G("omegaconf.dictconfig", "DictConfig")
    payload = (b"(" + dc + b")\x81" + b"}" + U("_content") + b"}" + U("a") + b"K\x01ssb"  # NEWOBJ + BUILD
               + call(dc, U("x"), U("y")) + b"t")  # REDUCE
    src = write_torch_file(tmp_path / "x.ckpt", body(payload, 2), legacy=False)
    from edlm.runs.convert import _load_ckpt
    from edlm.safe_load import Foreign

    ck = _load_ckpt(src)
    built, called = ck["hyper_parameters"]
    assert isinstance(built, Foreign) and built.state == {"_content": {"a": 1}}
    assert isinstance(called, Foreign) and called.args == ("x", "y")
    assert type(built) is type(called) and type(built).__module__ == "omegaconf.dictconfig"
    assert not bait.exists()


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_omegaconf_checkpoint_still_converts_in_both_formats(tmp_path, data_root, legacy):
    ref = ar_ref()
    src = lightning_ckpt(tmp_path / "ar.ckpt", ref)
    if legacy:  # same object, re-saved in the legacy format (the fake classes are re-registered by the helper)
        src = lightning_ckpt(tmp_path / "ar-legacy.ckpt", ref, legacy=True)
    s = convert("mdlm-ar-lightning", src, tmp_path / "run", data="synthetic", bos_id=BOS)
    assert s["n_heads"] == H and s["ema"] and s["step"] == 1234  # n_heads read from the omegaconf config


def test_genuine_lightning_omegaconf_transformers_checkpoint_converts(tmp_path, data_root):
    """A checkpoint written by Lightning's Trainer with omegaconf's DictConfig and transformers' GPT-2 tokenizer
    in its hyper-parameters (MDLM's recipe) converts, with n_heads read from the config."""
    L = pytest.importorskip("lightning")
    omegaconf = pytest.importorskip("omegaconf")
    transformers = pytest.importorskip("transformers")
    from lightning_checkpoint import write_mdlm_style_checkpoint

    src = write_mdlm_style_checkpoint(tmp_path, L, omegaconf, transformers)
    s = convert("mdlm-ar-lightning", src, tmp_path / "run", data="synthetic", bos_id=BOS)
    assert s["n_heads"] == H and s["ema"] and s["step"] == 2


# ------------------------------------------------------------------------------------------------
# edlm convert --from mdlm-hf with a pytorch_model.bin
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("name", ["dotted-builtins-eval", "os-system", "stack-global", "newobj-build-real-class",
                                  "dotted-allowlisted-class"])
def test_crafted_pytorch_model_bin_is_refused(tmp_path, data_root, capsys, name, legacy):
    hub = tmp_path / "hub"
    hub.mkdir()
    _, marker = crafted(tmp_path, name, legacy, file="hub/pytorch_model.bin", key="w")
    rc, err = cli(capsys, ["convert", "--from", "mdlm-hf", "--src", hub, "--out", tmp_path / "run", "--bos-id", BOS])
    assert_one_clear_error(rc, err, "refusing to load", "pytorch_model.bin", _needle(name), "model.safetensors")
    assert not marker.exists() and not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------------------
# train --resume: optim.pt (forged hashes) and an older run's rng.pt
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(synthetic_data, tmp_path_factory):
    from edlm.api.trainer import train_run as train

    root = tmp_path_factory.mktemp("sec")
    m, t = micro_configs(max_steps=2, save_every=2)
    train(t, m, root / "run", quiet=True)
    return root / "run"


def _forge(run, d, name):
    """Make state.json and latest.json agree with the planted file, as someone editing the folder can."""
    import hashlib

    state = json.loads((d / "state.json").read_text())
    if name == "rng.pt":  # the older format: rng.pt, no file list, no state hash
        for k in ("files", "format", "identity"):
            state.pop(k, None)
        (d / "rng.safetensors").unlink()
        (d / "state.json").write_text(json.dumps(state))
        (run / "latest.json").write_text(json.dumps({"step": state["step"], "dir": f"checkpoints/{d.name}"}))
        return
    data = (d / name).read_bytes()
    state["files"][name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (d / "state.json").write_text(json.dumps(state))
    sha = hashlib.sha256((d / "state.json").read_bytes()).hexdigest()
    (run / "latest.json").write_text(json.dumps({"step": state["step"], "dir": f"checkpoints/{d.name}",
                                                 "state_sha256": sha}))


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("file", ["optim.pt", "rng.pt"])
@pytest.mark.parametrize("name", ["dotted-builtins-eval", "dotted-allowlisted-class", "os-system", "stack-global",
                                  "inst-protocol-0", "persistent-id-module", "newobj-build-real-class"])
def test_resume_with_a_crafted_training_state_is_refused(trained, tmp_path, capsys, name, file, legacy):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    d = latest_dir(run)
    marker = tmp_path / "PWNED"
    proto, payload = PAYLOADS[name](marker)
    write_torch_file(d / file, body(payload, proto, key="state"), legacy)
    _forge(run, d, file)
    rc, err = cli(capsys, ["train", "--out", run, "--resume", "--max_steps", "4", "--quiet"])
    assert_one_clear_error(rc, err, "refusing to load", file, _needle(name), "could run code", "trust")
    assert not marker.exists()


# ------------------------------------------------------------------------------------------------
# Hugging Face evaluators: weights from safetensors only, no remote code
# ------------------------------------------------------------------------------------------------

def test_hf_evaluator_folder_with_a_pickled_bin_is_refused(tmp_path, capsys):
    pytest.importorskip("transformers")
    from test_eval_hf import make_tiny_hf

    folder = tmp_path / "hf"
    folder.mkdir()
    make_tiny_hf(folder)
    marker = tmp_path / "PWNED"
    from safetensors.torch import load_file

    sd = dict(load_file(str(folder / "model.safetensors")))
    (folder / "model.safetensors").unlink()
    sd["evil"] = _Reduce(os.mkdir, str(marker))
    torch.save(sd, folder / "pytorch_model.bin")
    from edlm.eval.evaluators import get_evaluator

    with pytest.raises(EdlmError, match="safetensors only"):
        get_evaluator(str(folder))
    assert not marker.exists()


# ------------------------------------------------------------------------------------------------
# The loader itself
# ------------------------------------------------------------------------------------------------

def test_the_safe_global_table_is_restored_after_each_load(tmp_path):
    from edlm.safe_load import LIGHTNING_FOREIGN, load_torch_file

    def mine():
        pass

    before = torch.serialization.get_safe_globals()
    torch.serialization.add_safe_globals([mine])
    try:
        torch.save({"a": torch.ones(2)}, tmp_path / "x.pt")
        load_torch_file(tmp_path / "x.pt", "x", refused="", foreign=LIGHTNING_FOREIGN)
        with pytest.raises(EdlmError):
            load_torch_file(write_torch_file(tmp_path / "y.pt", body(call(G("os", "system"), U("true")), 2), False),
                            "y", refused="", foreign=LIGHTNING_FOREIGN)
        after = torch.serialization.get_safe_globals()
        assert mine in after and not any(c in after for c in LIGHTNING_FOREIGN)
    finally:
        torch.serialization.clear_safe_globals()
        torch.serialization.add_safe_globals(before)


def test_foreign_names_are_exact_pairs():
    from edlm.safe_load import LIGHTNING_FOREIGN, Foreign, foreign_classes

    for bad in [("torch._utils", "_rebuild_tensor.__globals__"), ("torch", ""), ("", "eval"), ("os", "sys.x"),
                ("a b", "c")]:
        with pytest.raises(ValueError):
            foreign_classes([bad])
    for c in LIGHTNING_FOREIGN:  # inert classes of ours, never a real global
        assert issubclass(c, Foreign) and c.__dict__.keys() <= {"__module__", "__qualname__", "origin", "__doc__"}
        assert "." not in c.__qualname__ and c.origin == f"{c.__module__}.{c.__qualname__}"


def test_no_other_unpickling_anywhere_in_edlm():
    """torch.load is called in one place (edlm.safe_load, weights_only=True); nothing else unpickles."""
    import ast
    from pathlib import Path

    import edlm

    src = Path(edlm.__file__).parent
    loads, other = [], []
    for p in sorted(src.rglob("*.py")):
        for node in ast.walk(ast.parse(p.read_text())):
            if not isinstance(node, ast.Call):
                continue
            f = ast.unparse(node.func)
            kw = {k.arg: ast.unparse(k.value) for k in node.keywords}
            if f == "torch.load":
                loads.append((p.name, kw.get("weights_only")))
            if f.split(".")[-1] in ("loads", "load", "Unpickler") and f.split(".")[0] in ("pickle", "dill",
                                                                                          "cloudpickle", "joblib"):
                other.append((p.name, f))
            if kw.get("allow_pickle") == "True" or kw.get("weights_only") == "False" or \
                    kw.get("trust_remote_code") == "True":
                other.append((p.name, f, kw))
    assert loads == [("safe_load.py", "True")], loads
    assert other == [], other
