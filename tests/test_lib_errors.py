"""Library errors outside training speak the library's language (`option`, `eos=all`); the command that
calls the library turns them into its flags, so `edlm ...` messages are as before."""

import pytest

from edlm.cli import main
from edlm.commands import in_flag_terms
from edlm.commands.convert import FLAGS
from edlm.errors import EdlmError


def _cli_err(capsys, *argv):
    capsys.readouterr()
    assert main([str(a) for a in argv]) == 2
    return capsys.readouterr().err


def test_convert_names_arguments_and_the_cli_names_flags(tmp_path, data_root, capsys):
    from edlm.runs.convert import convert
    from test_convert import dit_ref, hf_folder

    hub = hf_folder(tmp_path / "hub", dit_ref())
    with pytest.raises(EdlmError) as e:
        convert("mdlm-hf", hub, tmp_path / "r", data="synthetic", bos_id=40)
    assert "`bos_id` 40 is outside the vocabulary" in str(e.value) and "--" not in str(e.value)
    err = _cli_err(capsys, "convert", "--from", "mdlm-hf", "--src", hub, "--out", tmp_path / "c",
                   "--data", "synthetic", "--bos-id", 40)
    assert "--bos-id 40 is outside the vocabulary" in err and "`" not in err


def test_data_prepare_names_options_and_the_cli_names_flags(data_root, capsys):
    from edlm.data.corpora import prepare

    with pytest.raises(EdlmError) as e:
        prepare("wiki-char", tokenizer="gpt2")
    assert "drop `tokenizer`, or use `edlm data prepare textfile" in str(e.value)
    err = _cli_err(capsys, "data", "prepare", "wiki-char", "--tokenizer", "gpt2")
    assert "drop --tokenizer, or use `edlm data prepare textfile" in err


def test_eval_and_sampling_errors_in_both_wordings():
    from edlm.eval.genppl import evaluate_rows

    with pytest.raises(EdlmError) as e:
        evaluate_rows([{"ids": [1, 2, 3]}], "true", batch_size=0)
    assert str(e.value) == "`batch_size` must be >= 1"
    eval_opts = ("batch_size", "max_tokens", "eos", "stride", "evaluator")  # as `edlm eval samples` does
    assert str(in_flag_terms(e.value, eval_opts, dash=True)) == "--batch-size must be >= 1"
    gen = EdlmError("`length` 99 exceeds what the model allows (16); to generate longer, add `stride` S")
    assert str(in_flag_terms(gen, ("length", "stride"))) == (
        "--length 99 exceeds what the model allows (16); to generate longer, add --stride S")
    fmt = EdlmError("unknown `fmt` 'x'; this looks like the AR baseline; use `fmt=mdlm-ar-lightning`")
    assert str(in_flag_terms(fmt, FLAGS)) == (
        "unknown --from 'x'; this looks like the AR baseline; use --from mdlm-ar-lightning")
