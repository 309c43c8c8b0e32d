"""Audio sources, decoding, crops and padding; the demo generator; benchmark smoke runs."""

import itertools
import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import ROOT

from hf_corrdistill.data.crops import AudioCollator, CroppedAudioDataset, StreamedCroppedAudio
from hf_corrdistill.data.sources import AudioDecodeError, decode_audio, load_audio_source
from hf_corrdistill.tools.demo import make_noise_bank, make_speech_corpus


def write(path, samples, rate=16000):
    sf.write(path, samples, rate)
    return {"path": str(path), "bytes": None}


def test_decode_mixes_down_and_resamples(tmp_path):
    t = np.arange(8000) / 8000
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 440 * t)], axis=1) * 0.5
    audio = decode_audio(write(tmp_path / "a.wav", stereo, 8000))
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) - 16000) <= 1  # one second at 16 kHz


@pytest.mark.parametrize(
    "content,subtype,message",
    [(np.zeros(0), "PCM_16", "no samples"), (np.zeros(4000), "PCM_16", "all zeros"),
     (np.full(4000, np.nan), "FLOAT", "NaN")],
)
def test_bad_audio_is_named(tmp_path, content, subtype, message):
    sf.write(tmp_path / "bad.wav", content.astype(np.float32), 16000, subtype=subtype)
    with pytest.raises(AudioDecodeError, match=message) as error:
        decode_audio({"path": str(tmp_path / "bad.wav"), "bytes": None})
    assert "bad.wav" in str(error.value)


def test_undecodable_file_is_named(tmp_path):
    (tmp_path / "broken.flac").write_bytes(b"fLaC not really")
    with pytest.raises(AudioDecodeError, match="broken.flac"):
        decode_audio({"path": str(tmp_path / "broken.flac"), "bytes": None})


def test_crops_are_reproducible_and_bad_files_replaced(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(3):
        write(tmp_path / f"u{i}.wav", rng.standard_normal(20000).astype(np.float32) * 0.1)
    write(tmp_path / "u3.wav", np.zeros(20000))  # all zeros: skipped, counted
    source = load_audio_source(str(tmp_path))
    dataset = CroppedAudioDataset(source, "audio", max_length=8000, min_length=4000, seed=1)
    with pytest.warns(UserWarning, match="u3.wav"):
        examples = [dataset[i] for i in range(4)]
    items = [example["input_values"] for example in examples]
    assert examples[3]["skipped"] == {"silent": 1}
    assert all(len(x) == 8000 for x in items)
    assert dataset.skipped["silent"] == 1 and dataset[0]["skipped"] == {}  # reported once, with the next example
    again = CroppedAudioDataset(source, "audio", max_length=8000, min_length=4000, seed=1)
    assert np.array_equal(again[0]["input_values"], items[0])
    again.set_epoch(1)
    assert not np.array_equal(again[0]["input_values"], items[0])  # a new epoch, a new crop


def test_streamed_source_and_saved_dataset(tmp_path):
    (tmp_path / "train").mkdir()
    for i in range(4):
        write(tmp_path / "train" / f"u{i}.wav", np.random.default_rng(i).standard_normal(9000).astype(np.float32) / 10)
    streamed = StreamedCroppedAudio(load_audio_source(str(tmp_path), streaming=True), "audio", 8000, 4000, seed=0,
                                    shuffle_buffer=4)
    lengths = [len(e["input_values"]) for e in itertools.islice(streamed, 12)]
    assert lengths == [8000] * 12  # the stream cycles: pass after pass of the 4 utterances
    saved = tmp_path / "saved"
    load_audio_source(str(tmp_path)).save_to_disk(str(saved))
    reloaded = load_audio_source(str(saved))
    assert len(reloaded) == 4 and decode_audio(reloaded[0]["audio"]).size == 9000
    with pytest.raises(FileNotFoundError, match="validation"):
        load_audio_source(str(tmp_path), "validation")


def test_collator_pads_and_masks():
    batch = AudioCollator(pad_to_multiple_of=320)([{"input_values": np.ones(500)}, {"input_values": np.ones(700)}])
    assert batch["input_values"].shape == (2, 960)
    assert batch["attention_mask"].sum(1).tolist() == [500, 700]
    assert torch.all(batch["input_values"][0, 500:] == 0)


def test_demo_generator_is_deterministic(tmp_path, espeak):
    make_speech_corpus(tmp_path / "a", 2, 1, seed=3)
    make_speech_corpus(tmp_path / "b", 2, 1, seed=3)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.flac"))
    assert len(files) == 3
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert len(load_audio_source(str(tmp_path / "a"), "validation")) == 1


def test_noise_bank_generator_is_deterministic_and_split(tmp_path):
    make_noise_bank(tmp_path / "a", 0.5, seed=1)
    make_noise_bank(tmp_path / "b", 0.5, seed=1)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.flac"))
    assert {p.parts[1] for p in files} == {"noise", "music", "babble"}
    assert {p.parts[0] for p in files} == {"train", "test"}
    train = {p.name for p in files if p.parts[0] == "train"}
    assert not train & {p.name for p in files if p.parts[0] == "test"}
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_bench_loss_smoke():
    result = subprocess.run([sys.executable, "benchmarks/bench_loss.py", "--tiny", "--repeats", "2"], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "speed-up (naive / gram)" in result.stdout


def test_bench_data_smoke():
    result = subprocess.run([sys.executable, "benchmarks/bench_data.py", "--tiny"], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "real-time factor per worker" in result.stdout


def test_bench_step_smoke(tmp_path):
    output = tmp_path / "step.json"
    result = subprocess.run([sys.executable, "benchmarks/bench_step.py", "--size", "tiny", "--repeats", "2",
                             "--warmup", "1", "--teacher_dtype", "bfloat16", "--output", str(output)], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads(output.read_text())
    assert figures == json.loads(result.stdout)
    assert set(figures["part_share"]) == {"teacher_forward", "student_forward", "loss", "backward", "optimizer"}
    assert sum(figures["part_share"].values()) == pytest.approx(1.0)
    assert figures["audio_seconds_per_second"] == pytest.approx(4 * 2.0 / figures["step_seconds_median"])
    assert 0 < figures["teacher_loss_relative_difference"] < 1e-2  # a bf16 teacher changes the loss, a little


def test_bench_s3prl_smoke():
    """Same architecture as s3prl's DistilHuBERT: equal parameter counts; both timed in one process."""
    result = subprocess.run([sys.executable, "benchmarks/bench_s3prl.py", "--batch", "2", "--seconds", "1",
                             "--repeats", "1"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads(result.stdout)
    assert figures["parameters_m"]["ours"] == figures["parameters_m"]["s3prl"]
    assert set(figures["median_seconds"]) == {"s3prl", "ours-kd", "ours-cl"}
    median = figures["median_seconds"]
    assert figures["ratio_ours_cl_to_s3prl"] == median["ours-cl"] / median["s3prl"]


def test_bench_startup_smoke():
    result = subprocess.run([sys.executable, "benchmarks/bench_startup.py", "--repeats", "1"], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    medians = json.loads(result.stdout)["median_seconds"]
    assert set(medians) == {"failing train.py", "import package", "TrainingArguments", "floor"}


def test_parquet_source(tmp_path):
    import datasets

    paths = []
    for i in range(3):
        paths.append(str(write(tmp_path / f"p{i}.wav", np.full(9000, 0.1 * (i + 1), dtype=np.float32))["path"]))
    table = datasets.Dataset.from_dict({"audio": paths}).cast_column("audio", datasets.Audio(decode=False))
    table = table.map(lambda row: {"audio": {"bytes": open(row["audio"]["path"], "rb").read(), "path": None}})
    table.to_parquet(tmp_path / "speech.parquet")
    source = load_audio_source(str(tmp_path / "speech.parquet"))
    assert len(source) == 3
    assert np.allclose(decode_audio(source[1]["audio"]), 0.2, atol=1e-4)


def test_length_grouping_limits_padding_and_keeps_every_utterance(tmp_path):
    rng = np.random.default_rng(0)
    lengths = rng.integers(5000, 40000, size=24)
    for i, length in enumerate(lengths):
        write(tmp_path / f"u{i:02d}.wav", rng.standard_normal(length).astype(np.float32) * 0.1)
    source = load_audio_source(str(tmp_path), streaming=True)

    def padded_fraction(group_batches):
        stream = StreamedCroppedAudio(source, "audio", 48000, 4000, seed=0, batch_size=4,
                                      length_group_batches=group_batches)
        examples = [len(e["input_values"]) for e in itertools.islice(stream, 24)]  # one pass
        assert sorted(examples) == sorted(lengths.tolist())  # each utterance exactly once
        batches = [examples[i : i + 4] for i in range(0, len(examples), 4)]
        return 1 - sum(sum(b) for b in batches) / sum(4 * max(b) for b in batches)

    assert padded_fraction(6) < 0.5 * padded_fraction(0)


def test_audiofolder_layout_with_metadata(tmp_path):
    (tmp_path / "train").mkdir()
    for i in range(3):
        write(tmp_path / "train" / f"s{i}.wav", np.full(9000, 0.1, dtype=np.float32))
    (tmp_path / "train" / "metadata.csv").write_text("file_name,text\ns0.wav,a\ns2.wav,c\n")
    source = load_audio_source(str(tmp_path), "train")
    assert len(source) == 2 and source[1]["text"] == "c"
    assert source[1]["audio"]["path"].endswith("s2.wav")
    (tmp_path / "train" / "metadata.csv").write_text("file_name,text\nmissing.wav,a\n")
    with pytest.raises(FileNotFoundError, match="missing.wav"):
        load_audio_source(str(tmp_path), "train")


def test_streamed_source_is_shared_by_dataloader_workers(tmp_path):
    for i in range(10):
        write(tmp_path / f"u{i}.wav", np.full(9000 + 100 * i, 0.1, dtype=np.float32))
    stream = StreamedCroppedAudio(load_audio_source(str(tmp_path), streaming=True), "audio", 20000, 4000, seed=0)
    loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=2)
    lengths = sorted(len(example["input_values"]) for example in itertools.islice(loader, 10))
    assert lengths == [9000 + 100 * i for i in range(10)]  # every utterance exactly once


def _pass_of(stream, workers: int, count: int) -> list[int]:
    """The lengths of the first ``count`` examples a DataLoader with ``workers`` workers draws from ``stream``."""
    loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=workers)
    return [len(example["input_values"]) for example in itertools.islice(loader, count)]


@pytest.mark.parametrize("files,workers", [(10, 0), (9, 0), (8, 2)])  # split by shard, by example; 2 workers each
def test_processes_stream_disjoint_shares_of_each_pass(tmp_path, files, workers):
    """Two processes (rank 0 and 1 of 2) each read their own share: in each pass disjoint, together every utterance
    once (the shares change from pass to pass: every process shuffles the shards alike, then takes its own)."""
    for i in range(files):
        write(tmp_path / f"u{i}.wav", np.full(9000 + 100 * i, 0.1, dtype=np.float32))
    source = load_audio_source(str(tmp_path), streaming=True)
    passes = {0: [], 1: []}
    for rank in (0, 1):
        stream = StreamedCroppedAudio(source, "audio", 20000, 4000, seed=0, shuffle_buffer=4, rank=rank, world_size=2)
        size = (files + 1 - rank) // 2
        seen = _pass_of(stream, workers, 2 * size)
        for index, share in enumerate((seen[:size], seen[size:])):
            assert len(set(share)) == size, (rank, index)
            passes[index].append(set(share))
    for first, second in passes.values():
        assert not first & second and first | second == {9000 + 100 * i for i in range(files)}


def test_crops_differ_across_processes_and_workers(tmp_path):
    """Identical utterances get different crops and views on every process and worker: an utterance's key holds
    its position, the process's rank and the worker's id."""
    audio = np.random.default_rng(0).standard_normal(40000).astype(np.float32) * 0.1
    for i in range(8):
        write(tmp_path / f"same{i}.wav", audio)
    source = load_audio_source(str(tmp_path), streaming=True)
    crops = []
    for rank in (0, 1):
        stream = StreamedCroppedAudio(source, "audio", 8000, 4000, seed=0, rank=rank, world_size=2)
        loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=2)
        crops += [np.asarray(example["input_values"][:50]).tobytes() for example in itertools.islice(loader, 4)]
    assert len(crops) == 8 and len(set(crops)) == 8


def test_a_share_without_usable_audio_is_an_error_naming_the_process(tmp_path):
    write(tmp_path / "good.wav", np.full(9000, 0.1, dtype=np.float32))
    write(tmp_path / "silent.wav", np.zeros(9000, dtype=np.float32))
    source = load_audio_source(str(tmp_path), streaming=True)  # 2 shards: good.wav on rank 0, silent.wav on rank 1
    with pytest.warns(UserWarning), pytest.raises(AudioDecodeError, match="process 1's share"):
        next(iter(StreamedCroppedAudio(source, "audio", 20000, 4000, seed=0, rank=1, world_size=2)))
    # with workers, one whose part holds nothing usable stops and the other goes on
    assert _pass_of(StreamedCroppedAudio(source, "audio", 20000, 4000, seed=0), 2, 3) == [9000] * 3


def test_joined_splits(tmp_path):
    for split, count in (("a", 2), ("b", 3)):
        (tmp_path / split).mkdir()
        for i in range(count):
            write(tmp_path / split / f"{split}{i}.wav", np.full(9000, 0.1, dtype=np.float32))
    assert len(load_audio_source(str(tmp_path), "a+b")) == 5
    assert len(list(load_audio_source(str(tmp_path), "a+b", streaming=True))) == 5


def test_zero_byte_file_is_skipped_as_empty(tmp_path):
    for i in range(2):
        write(tmp_path / f"u{i}.wav", np.random.default_rng(i).standard_normal(9000).astype(np.float32) * 0.1)
    (tmp_path / "u2.wav").write_bytes(b"")  # a zero-byte .wav: empty, not undecodable
    sf.write(tmp_path / "u3.wav", np.zeros(0, dtype=np.float32), 16000)  # a header and no samples: empty too
    (tmp_path / "u4.wav").write_bytes(b"RIFF not really")  # broken: still undecodable
    with pytest.raises(AudioDecodeError, match="u2.wav") as error:
        decode_audio({"path": str(tmp_path / "u2.wav"), "bytes": None})
    assert error.value.reason == "empty"
    with pytest.raises(AudioDecodeError) as error:
        decode_audio({"path": None, "bytes": b""})
    assert error.value.reason == "empty"
    dataset = CroppedAudioDataset(load_audio_source(str(tmp_path)), "audio", max_length=8000, min_length=4000, seed=0)
    with pytest.warns(UserWarning):
        examples = [dataset[i] for i in range(len(dataset))]
    assert all(len(e["input_values"]) == 8000 for e in examples)
    assert dict(dataset.skipped) == {"empty": 2, "undecodable": 1}


def test_folders_named_like_audio_are_not_listed(tmp_path):
    from hf_corrdistill.data.views import NoiseBank, load_impulse_responses

    for folder in ("speech", "noise", "rooms"):
        (tmp_path / folder / "album.wav").mkdir(parents=True)  # a directory with an audio suffix
        write(tmp_path / folder / "album.wav" / "inside.wav", np.full(9000, 0.1, dtype=np.float32))
        write(tmp_path / folder / "a.flac", np.full(9000, 0.2, dtype=np.float32))
    source = load_audio_source(str(tmp_path / "speech"))
    assert sorted(row["path"].split("/")[-1] for row in source["audio"]) == ["a.flac", "inside.wav"]
    dataset = CroppedAudioDataset(source, "audio", max_length=8000, min_length=4000, seed=0)
    for epoch in range(2):
        dataset.set_epoch(epoch)
        [dataset[i] for i in range(len(dataset))]
    assert sum(dataset.skipped.values()) == 0
    bank = NoiseBank([str(tmp_path / "noise")], cache_dir=str(tmp_path / "cache"))
    assert sorted(f.split("/")[-1] for f in bank.files) == ["a.flac", "inside.wav"]
    assert len(load_impulse_responses(str(tmp_path / "rooms"))) == 2
    (tmp_path / "only_dirs" / "x.ogg").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no .flac"):
        load_audio_source(str(tmp_path / "only_dirs"))
