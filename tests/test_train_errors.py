"""Training errors speak the library's language (`option`), and `edlm train` turns them into its flags."""

import pytest

from conftest import micro_configs
from edlm.api.trainer import train_run as train
from edlm.cli import main
from edlm.errors import EdlmError

CASES = [
    ({"objective": "nce"}, {}, "objective 'nce' needs `diffusion`", "objective 'nce' needs --diffusion"),
    ({"seq_len": 32}, {"max_len": 16},
     "`seq_len` 32 is longer than the model allows (16); lower `seq_len` or raise `max_len`",
     "--seq-len 32 is longer than the model allows (16); lower --seq-len or raise --max-len"),
    ({"lr": -1.0}, {}, "`lr` must be a finite number with 0 < `lr`", "--lr must be a finite number with 0 < --lr"),
    ({}, {"d_model": 30, "n_heads": 4}, "`d_model` 30 must be a multiple of `n_heads` 4",
     "--d-model 30 must be a multiple of --n-heads 4"),
]


@pytest.mark.parametrize("tr,md,api_msg,cli_msg", CASES)
def test_library_names_options_and_the_cli_names_flags(synthetic_data, tmp_path, capsys, tr, md, api_msg, cli_msg):
    from dataclasses import replace

    m, t = micro_configs(max_steps=1)
    with pytest.raises(EdlmError) as e:
        train(replace(t, **tr), replace(m, **md), tmp_path / "api", quiet=True)
    assert api_msg in str(e.value) and "--" not in str(e.value)
    flags = [x for k, v in {**tr, **md}.items() for x in ("--" + k, str(v))]
    capsys.readouterr()
    assert main(["train", "--preset", "micro", "--data", "synthetic", "--seq_len", "16", "--max_steps", "1",
                 "--quiet", "--out", str(tmp_path / "cli"), *flags]) == 2
    err = capsys.readouterr().err
    assert cli_msg in err and "`" not in err
