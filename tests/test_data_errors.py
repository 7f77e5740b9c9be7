"""Bad input gets one-line errors (acceptance f)."""

import pytest

from data_fixtures import enpt_tokenizer_dir, write_corpus
from jaxcpt.data.corpus_tasks import register_corpus
from jaxcpt.data.pipeline import eval_batches, train_iterator
from jaxcpt.errors import JaxcptError


def one_line(err) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


def test_empty_corpus_file_is_named(tmp_path):
    write_corpus(tmp_path, {"pt": 5})
    (tmp_path / "train" / "xx.tsv").write_text("\n  \n", "utf-8")
    with pytest.raises(JaxcptError) as err:
        register_corpus("bad_empty", tmp_path)
    expected = f"{tmp_path / 'train' / 'xx.tsv'}: empty corpus file (no non-blank lines)"
    assert one_line(err) == expected


def test_non_utf8_names_file_and_line(tmp_path):
    write_corpus(tmp_path, {"pt": 5})
    (tmp_path / "train" / "yy.txt").write_bytes(b"fine line\nsecond\ncaf\xe9 latin-1\n")
    with pytest.raises(JaxcptError) as err:
        register_corpus("bad_bytes", tmp_path)
    assert one_line(err).startswith(f"{tmp_path / 'train' / 'yy.txt'}:3: not UTF-8")


def test_directory_without_corpus_files(tmp_path):
    with pytest.raises(JaxcptError, match="no <language>.tsv or <language>.txt"):
        register_corpus("bad_dir", tmp_path)


def test_unknown_task_name():
    with pytest.raises(JaxcptError) as err:
        train_iterator("no_such_corpus", tokenizer_dir=str(enpt_tokenizer_dir()), objective="mlm",
                       sequence_length=32, batch_size=2, seed=0)
    assert "unknown seqio task or mixture 'no_such_corpus'" in one_line(err)
    assert "libreoffice_help" in one_line(err)


@pytest.mark.parametrize("objective", ["mlm", "span_corruption"])
def test_sequence_length_too_short(objective):
    with pytest.raises(JaxcptError) as err:
        eval_batches("libreoffice_help_heldout.pt", tokenizer_dir=str(enpt_tokenizer_dir()),
                     objective=objective, sequence_length=4, batch_size=2)
    assert "sequence length 4 is too short" in one_line(err)


def test_bad_objective_and_options():
    common = dict(tokenizer_dir=str(enpt_tokenizer_dir()), sequence_length=32, batch_size=2,
                  seed=0)
    with pytest.raises(JaxcptError, match="unknown objective 'clm'"):
        train_iterator("libreoffice_help", objective="clm", **common)
    with pytest.raises(JaxcptError, match="unknown mlm option"):
        train_iterator("libreoffice_help", objective="mlm", noise_density=0.3, **common)


def test_mlm_needs_a_mask_token(t5_tokenizer):
    with pytest.raises(JaxcptError) as err:
        train_iterator("libreoffice_help", tokenizer_dir=str(t5_tokenizer()), objective="mlm",
                       sequence_length=32, batch_size=2, seed=0)
    assert "has no mask token" in one_line(err)


def test_cli_rates_and_bad_name(capsys):
    from jaxcpt.cli import main as cli

    assert cli(["data", "rates", "--alpha", "0.0"]) in (0, None)
    out = capsys.readouterr().out
    assert "alpha=0.0" in out and out.count("0.0769") == 13       # uniform over 13 languages
    cli(["data", "rates"])   # back to the default registration for the other tests
    assert cli(["data", "peek", "nope", "--tokenizer", str(enpt_tokenizer_dir())]) == 2
    assert "unknown corpus 'nope': pass --corpus-dir DIR" in capsys.readouterr().err


def test_numpy_side_imports_without_tensorflow():
    import subprocess
    import sys

    code = ("import sys, jaxcpt.data.masking, jaxcpt.data.tokenizer_info, "
            "jaxcpt.data.span_corruption, jaxcpt.data.mlm_batches, jaxcpt.data.seq2seq_batches, "
            "jaxcpt.data.token_stream; assert 'tensorflow' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
