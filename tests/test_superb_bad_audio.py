"""Audio files eval_superb.py cannot use are named together in one error, exit code 2, never a traceback."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from hf_corrdistill.superb.eval_cli import main
from hf_corrdistill.superb.tasks import Item, UnusableAudio, audio_headers, decode_problems, read_header

ROOT = Path(__file__).resolve().parent.parent
MINI = ROOT / "demo_data" / "superb_mini"
KS, KS_TEST = "speech_commands_v0.01", "speech_commands_test_set_v0.01"


def _ks_copy(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    for folder in (KS, KS_TEST):
        shutil.copytree(MINI / folder, data / folder)
    return data


def _train_files(data: Path) -> list[Path]:
    lists = {line for name in ("validation", "testing")
             for line in (data / KS / f"{name}_list.txt").read_text().split()}
    return [p for p in sorted((data / KS).glob("*/*.wav"))
            if not p.parent.name.startswith("_") and p.relative_to(data / KS).as_posix() not in lists]


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _with_nan(path: Path) -> None:
    samples, rate = sf.read(path, dtype="float32")
    samples[len(samples) // 2] = np.nan
    sf.write(path, samples, rate, subtype="FLOAT")


def _truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _argv(data: Path, output: Path) -> list[str]:
    return ["--upstream", "fbank", "--tasks", "ks", "--data", str(data), "--snrs", "clean", "--steps", "5",
            "--output_dir", str(output)]


def test_headers_tell_empty_truncated_and_unreadable_files(tmp_path):
    good = MINI / KS / "yes" / "5731decb_nohash_0.wav"
    assert read_header({"path": str(good), "bytes": None}) == (16000, None)
    assert read_header({"path": None, "bytes": good.read_bytes()}) == (16000, None)
    for name, spoil, reason in (("empty.wav", _empty, "unreadable: Format not recognised"),
                                ("short.wav", _truncated, "truncated: "), ("nan.wav", _with_nan, None)):
        shutil.copy(good, tmp_path / name)
        spoil(tmp_path / name)
        frames, problem = read_header({"path": str(tmp_path / name), "bytes": None})
        assert (problem is None and frames == 16000) if reason is None else problem.startswith(reason), problem
    sf.write(tmp_path / "none.wav", np.zeros(0, dtype=np.float32), 16000)
    assert read_header({"path": str(tmp_path / "none.wav"), "bytes": None}) == (0, "empty")
    items = [Item(name, {"path": str(tmp_path / name), "bytes": None}) for name in ("empty.wav", "nan.wav")]
    frames, problems = audio_headers([*items, items[0]])
    assert frames == {str(tmp_path / "nan.wav"): 16000} and list(problems) == [str(tmp_path / "empty.wav")]
    assert decode_problems(items, skip=problems) == {str(tmp_path / "nan.wav"): "NaN or inf samples"}


def test_one_message_names_every_unusable_file():
    message = str(UnusableAudio({"a.wav": "empty", "b.wav": "NaN or inf samples"}))
    assert message == "2 files cannot be used: a.wav (empty), b.wav (NaN or inf samples)"
    assert str(UnusableAudio({"a.wav": "empty"})) == "1 file cannot be used: a.wav (empty)"


@pytest.mark.slow
def test_empty_nan_and_truncated_files_are_one_error(tmp_path):
    """eval_superb.py in a fresh process: exit code 2, one line naming the three files, before any features."""
    data = _ks_copy(tmp_path)
    train = _train_files(data)
    test = sorted((data / KS_TEST).glob("yes/*.wav"))
    bad = {train[0]: _empty, train[3]: _with_nan, test[0]: _truncated}
    for path, spoil in bad.items():
        spoil(path)
    result = subprocess.run([sys.executable, "eval_superb.py", *_argv(data, tmp_path / "out")], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("eval_superb.py: error:")]
    assert len(errors) == 1 and "3 files cannot be used: " in errors[0]
    assert re.search(rf"{re.escape(str(train[0]))} \(unreadable: [^)]+\)", errors[0])
    assert f"{train[3]} (NaN or inf samples)" in errors[0]
    assert re.search(rf"{re.escape(str(test[0]))} \(truncated: \d+ of \d+ data bytes\)", errors[0])
    assert not list(tmp_path.glob("out/cache/*/shard-*"))


@pytest.mark.slow
def test_decode_problems_met_in_the_feature_pass_are_one_error(tmp_path, capsys):
    """Readable headers, undecodable audio in two splits: the first one met stops the pass, the message names both;
    the shards already written are whole, and a run on repaired data completes."""
    data = _ks_copy(tmp_path)
    train = _train_files(data)
    test = sorted((data / KS_TEST).glob("no/*.wav"))
    originals = {path: path.read_bytes() for path in (train[-1], test[-1])}
    for path in originals:
        _with_nan(path)
    with pytest.raises(SystemExit) as raised:
        main(_argv(data, tmp_path / "out"))
    assert raised.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]  # not the progress bars
    assert len(errors) == 1 and errors[0].startswith("eval_superb.py: error: 2 files cannot be used: ")
    error = errors[0]
    assert all(f"{path} (NaN or inf samples)" in error for path in originals)
    assert not list(tmp_path.glob("out/cache/*/*.tmp"))
    for path, content in originals.items():
        path.write_bytes(content)
    main(_argv(data, tmp_path / "out"))
    assert json.loads((tmp_path / "out" / "results.json").read_text())["results"]["ks"]["fbank"]["test"]


def test_unusable_background_noise_is_one_error(tmp_path, capsys):
    data = _ks_copy(tmp_path)
    noise = sorted((data / KS / "_background_noise_").glob("*.wav"))
    for path in noise[:2]:
        _empty(path)
    with pytest.raises(SystemExit) as raised:
        main(_argv(data, tmp_path / "out"))
    assert raised.value.code == 2
    error = capsys.readouterr().err
    assert "2 files cannot be used: " in error and all(str(path) in error for path in noise[:2])


def test_unreadable_noise_is_one_line(tmp_path, capsys):
    noise = tmp_path / "noise"
    shutil.copytree(MINI / "noise" / "test", noise)
    (noise / "zz_empty.wav").write_bytes(b"")
    with pytest.raises(SystemExit) as raised:
        main([*_argv(MINI, tmp_path / "out"), "--noise", str(noise), "--snrs", "clean", "10"])
    assert raised.value.code == 2
    error = capsys.readouterr().err
    assert f"eval_superb.py: error: noise {noise}: " in error and "zz_empty.wav" in error


def test_directories_named_like_audio_files_are_not_audio(tmp_path):
    """As in training: a folder called x.wav is passed over, in the word folders, the background noise and the
    test set alike, and the results are those of the data without it."""
    data = _ks_copy(tmp_path)
    for folder in (data / KS / "yes", data / KS / "_background_noise_", data / KS_TEST / "no"):
        (folder / "not_audio.wav").mkdir()
        (folder / "not_audio.wav" / "inside.txt").write_text("a folder, not a file")
    main(_argv(data, tmp_path / "out"))
    main(_argv(_ks_copy(tmp_path / "plain"), tmp_path / "plain-out"))
    ours, plain = (json.loads((tmp_path / out / "results.json").read_text())["results"]["ks"]["fbank"]
                   for out in ("out", "plain-out"))
    assert ours["test"] == plain["test"]
