"""Damaged corpus files are caught when a split is loaded (train, eval): one error naming the file and
`edlm data prepare NAME --force`; following it works. Before, a zeroed train.bin trained on zeros and a
zeroed test.bin gave a wrong NLL with exit 0."""

import shutil

import pytest

from faultlib import MICRO, assert_one_clear_error, cli, damage


@pytest.fixture(scope="module")
def mdlm_run(synthetic_data, tmp_path_factory):
    from edlm.cli import main

    run = tmp_path_factory.mktemp("corpus-run") / "mdlm"
    assert main(["train", "--out", str(run), *MICRO, "--max_steps", "2"]) == 0
    return run


@pytest.fixture
def corpus(synthetic_data, tmp_path, monkeypatch):
    """A private copy of the prepared `synthetic` corpus (EDLM_DATA points at it for this test)."""
    root = tmp_path / "data"
    shutil.copytree(synthetic_data / "synthetic", root / "synthetic")
    monkeypatch.setenv("EDLM_DATA", str(root))
    return root / "synthetic"


HOW = ["missing", "truncated", "zeroed", "flipped"]


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("split", ["train", "valid"])
def test_training_on_a_damaged_split_is_one_error(corpus, tmp_path, capsys, split, how):
    damage(corpus / f"{split}.bin", how)
    rc, err = cli(capsys, ["train", "--out", tmp_path / "r", *MICRO, "--max_steps", "2"])
    assert_one_clear_error(rc, err, f"{split}.bin", "edlm data prepare synthetic --force")
    assert not (tmp_path / "r" / "checkpoints").exists()


@pytest.mark.parametrize("how", HOW)
def test_eval_on_a_damaged_test_split_is_one_error_not_a_wrong_nll(corpus, mdlm_run, capsys, how):
    damage(corpus / "test.bin", how)
    rc, err = cli(capsys, ["eval", "nelbo", "--ckpt", mdlm_run, "--max-blocks", "4"])
    assert_one_clear_error(rc, err, "test.bin", "edlm data prepare synthetic --force")


@pytest.mark.parametrize("how", ["missing", "garbage", "empty-json"])
def test_damaged_manifest_is_one_error(corpus, mdlm_run, capsys, how):
    damage(corpus / "manifest.json", how)
    rc, err = cli(capsys, ["eval", "nelbo", "--ckpt", mdlm_run, "--max-blocks", "4"])
    assert_one_clear_error(rc, err, "synthetic", "edlm data prepare synthetic")


def test_following_the_advice_rebuilds_the_corpus(corpus, mdlm_run, capsys):
    damage(corpus / "test.bin", "zeroed")
    rc, _ = cli(capsys, ["eval", "nelbo", "--ckpt", mdlm_run, "--max-blocks", "4"])
    assert rc == 2
    assert cli(capsys, ["data", "prepare", "synthetic", "--force"])[0] == 0
    rc, err = cli(capsys, ["eval", "nelbo", "--ckpt", mdlm_run, "--max-blocks", "4"])
    assert rc == 0, err


def test_sampled_block_hash_catches_a_zeroed_big_file(corpus, monkeypatch):
    # files over FULL_HASH_MAX are checked by sampled blocks instead of a full hash
    from edlm.data import corpora
    from edlm.errors import EdlmError

    monkeypatch.setattr(corpora, "FULL_HASH_MAX", 0)
    assert len(corpora.load_split("synthetic", "train")) > 0
    damage(corpus / "train.bin", "zeroed")
    with pytest.raises(EdlmError, match="checksum differs"):
        corpora.load_split("synthetic", "train")


def test_old_manifest_gets_sampled_checksums_from_prepare_without_a_rebuild(corpus, capsys, monkeypatch):
    import json

    from edlm.data import corpora

    m = json.loads((corpus / "manifest.json").read_text())
    for sp in m["splits"].values():
        sp.pop("sample_sha256")
    (corpus / "manifest.json").write_text(json.dumps(m))
    monkeypatch.setattr(corpora, "FULL_HASH_MAX", 0)  # as if the files were big
    corpora.load_split("synthetic", "valid")
    assert "checked by size only" in capsys.readouterr().err
    before = (corpus / "train.bin").stat().st_mtime_ns
    assert corpora.prepare("synthetic")["cached"] is True
    assert (corpus / "train.bin").stat().st_mtime_ns == before  # not rebuilt
    damage(corpus / "valid.bin", "zeroed")
    with pytest.raises(Exception, match="checksum differs"):
        corpora.load_split("synthetic", "valid")
