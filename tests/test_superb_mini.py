"""The SUPERB-style mini sets: determinism, disjoint speakers and noise, labels that match the audio, layouts."""

import csv
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import require_espeak

from hf_corrdistill.tools import superb_mini as sm

needs_espeak = pytest.mark.usefixtures("espeak")

# Small, but with several speakers per split so that disjointness means something.
SIZES = dict(ks_speakers=(2, 1, 1), ks_silence=3, ic_speakers=(3, 2, 2), asr_speakers=(2, 2, 1),
             asr_utterances=(3, 2, 2), noise_clips=(2, 1, 1), noise_seconds=1.0, corpus_hours=0.01,
             corpus_speaker_minutes=0.15)
AUDIO = (".wav", ".flac")


def file_hashes(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def samples(path: Path) -> np.ndarray:
    return sf.read(path, dtype="int16")[0]


@pytest.fixture(scope="module")
def mini(tmp_path_factory) -> tuple[Path, dict]:
    require_espeak()
    root = tmp_path_factory.mktemp("mini")
    return root, sm.generate(root, seed=0, **SIZES)


def ks_splits(root: Path) -> dict[str, list[str]]:
    """Main-folder files by split, as the official lists define them."""
    ks = root / sm.KS_ROOT
    lists = {split: (ks / name).read_text().split() for split, name in sm.KS_LIST_FILES.items()}
    listed = set(lists["dev"]) | set(lists["test"])
    files = sorted(p.relative_to(ks).as_posix() for p in ks.glob("*/*.wav") if not p.parent.name.startswith("_"))
    return {"train": [f for f in files if f not in listed], **lists}


def ks_speaker(relative: str) -> str:
    return relative.rsplit("/", 1)[-1].split("_nohash_")[0]


def ic_rows(root: Path) -> dict[str, list[dict]]:
    rows = {}
    for split, name in sm.IC_CSV.items():
        with open(root / sm.IC_ROOT / "data" / name, newline="") as handle:
            rows[split] = list(csv.DictReader(handle))
    return rows


def asr_transcripts(root: Path, split: str) -> dict[str, str]:
    lines = {}
    for table in sorted((root / sm.ASR_ROOT / sm.ASR_FOLDERS[split]).glob("*/*/*.trans.txt")):
        for line in table.read_text().splitlines():
            utterance, text = line.split(" ", 1)
            lines[utterance] = text
    return lines


# ------------------------------------------------------------------------------------------------ determinism
@needs_espeak
def test_same_seed_same_bytes_across_processes_and_the_cli(mini, tmp_path):
    root, _ = mini
    args = []
    for key, value in SIZES.items():
        args += [f"--{key}", *map(str, value if isinstance(value, tuple) else (value,))]
    env = {**os.environ, "PYTHONHASHSEED": "12345"}  # a different str hash: nothing may depend on it
    subprocess.run([sys.executable, "-m", "hf_corrdistill.tools.superb_mini", "--output", str(tmp_path), "--seed", "0",
                    *args], check=True, capture_output=True, env=env)
    assert file_hashes(tmp_path) == file_hashes(root)


@needs_espeak
def test_another_seed_gives_other_files(mini, tmp_path):
    root, manifest = mini
    other = sm.generate(tmp_path, seed=1, **SIZES)
    first, second = file_hashes(root), file_hashes(tmp_path)
    shared = set(first.values()) & set(second.values())
    assert len(shared) < 0.05 * len(first), "most files should change with the seed"
    assert other["keyword_spotting"]["splits"]["train"]["speakers"] != manifest["keyword_spotting"]["splits"]["train"][
        "speakers"]


def test_refuses_a_folder_holding_other_corpora(tmp_path):
    (tmp_path / sm.ASR_ROOT).mkdir()
    with pytest.raises(FileExistsError, match="not written by"):
        sm.generate(tmp_path)
    assert (tmp_path / sm.ASR_ROOT).is_dir()


def test_sizes_are_checked():
    with pytest.raises(ValueError, match="training needs all"):
        sm.generate(Path("/nonexistent"), ic_utterances=(3, 20, 20))
    with pytest.raises(TypeError):
        sm.generate(Path("/nonexistent"), no_such_size=1)
    assert sm.Sizes(scale=3).scaled().ks_speakers == (3, 3, 3)
    assert sm.Sizes(scale=3, test_scale=2.5).scaled().test_scale == 2.5  # applied on top, not scaled itself
    assert sm.Sizes(scale=2, test_scale=3).scaled().test_extra() == {"ks_speakers": 4, "ks_silence": 8,
                                                                       "ic_speakers": 8, "ic_utterances": 64}
    assert set(sm.Sizes().test_extra().values()) == {0}
    with pytest.raises(ValueError, match="test_scale"):
        sm.generate(Path("/nonexistent"), test_scale=0.5)


# ------------------------------------------------------------------------------------------------- speakers
@needs_espeak
def test_speakers_disjoint_across_splits_and_tasks(mini):
    root, manifest = mini
    ks = ks_splits(root)
    ids = {split: {ks_speaker(f) for f in files} for split, files in ks.items()}
    assert all(ids.values())
    assert not (ids["train"] & ids["dev"] or ids["train"] & ids["test"] or ids["dev"] & ids["test"])
    test_set = {ks_speaker(p.name) for p in (root / sm.KS_TEST_ROOT).glob("*/*.wav") if p.parent.name != "_silence_"}
    assert test_set == ids["test"]

    ic = {split: {row["speakerId"] for row in rows} for split, rows in ic_rows(root).items()}
    assert not (ic["train"] & ic["dev"] or ic["train"] & ic["test"] or ic["dev"] & ic["test"])
    for rows in ic_rows(root).values():
        assert all(row["path"].split("/")[2] == row["speakerId"] for row in rows)

    asr = {split: {p.name for p in (root / sm.ASR_ROOT / folder).iterdir()}
           for split, folder in sm.ASR_FOLDERS.items()}
    assert not (asr["train"] & asr["dev"] or asr["train"] & asr["test"] or asr["dev"] & asr["test"])
    assert all(name.isdigit() for names in asr.values() for name in names)

    # the same sets in the manifest, and no speaker setting in two groups of any task
    assert {s: set(manifest["keyword_spotting"]["splits"][s]["speakers"]) for s in sm.SPLITS} == ids
    assert {s: set(manifest["intent_classification"]["splits"][s]["speakers"]) for s in sm.SPLITS} == ic
    assert {s: set(manifest["asr"]["splits"][s]["speakers"]) for s in sm.SPLITS} == asr
    corpus = {split: {p.name.split("-")[0] for p in (root / sm.CORPUS_ROOT / split).glob("*.flac")}
              for split in sm.CORPUS_SPLITS}
    assert len(corpus["train"]) >= 3 and corpus["validation"] and not corpus["train"] & corpus["validation"]
    assert {s: set(manifest["corpus"]["splits"][s]["speakers"]) for s in sm.CORPUS_SPLITS} == corpus
    settings = [sm.Speaker(**{k: v[k] for k in ("voice", "variant", "pitch", "speed")})
                for task, splits in (("keyword_spotting", sm.SPLITS), ("intent_classification", sm.SPLITS),
                                     ("asr", sm.SPLITS), ("corpus", sm.CORPUS_SPLITS))
                for split in splits for v in manifest[task]["splits"][split]["speakers"].values()]
    assert len(settings) == len(set(settings)), "a speaker setting in two groups (task, split or corpus)"
    assert all(20 <= s.pitch <= 80 and 130 <= s.speed <= 200 for s in settings)


@needs_espeak
def test_noise_bank_disjoint_and_unseen_categories_only_unseen(mini):
    root, manifest = mini
    noise = root / sm.NOISE_ROOT
    assert {p.name for p in (noise / "train").iterdir()} == set(sm.SEEN_NOISE)
    assert {p.name for p in (noise / "test").iterdir()} == set(sm.SEEN_NOISE)
    assert {p.name for p in (noise / "unseen").iterdir()} == set(sm.UNSEEN_NOISE)
    files = sorted(noise.rglob("*.flac"))
    assert len(files) == 3 * 2 + 3 * 1 + 2 * 1
    content = [hashlib.sha1(samples(p).tobytes()).hexdigest() for p in files]
    assert len(set(content)) == len(content), "a noise clip appears twice"
    # and none is a copy of a `_background_noise_` file or a test `_silence_` clip
    others = [hashlib.sha1(samples(p).tobytes()).hexdigest()
              for p in (*(root / sm.KS_ROOT / "_background_noise_").glob("*.wav"),
                        *(root / sm.KS_TEST_ROOT / "_silence_").glob("*.wav"))]
    assert not set(others) & set(content)
    listed = sorted(f for split in manifest["noise"].values() for names in split.values() for f in names)
    assert listed == [p.relative_to(root).as_posix() for p in files]
    for path in files:  # non-trivial, not clipped
        x = samples(path).astype(float)
        assert np.sqrt(np.mean(x**2)) > 300 and np.abs(x).max() < 32767


@needs_espeak
def test_test_scale_adds_new_test_speakers_and_keeps_every_other_file(mini, tmp_path):
    root, manifest = mini
    bigger = sm.generate(tmp_path, seed=0, **SIZES, test_scale=3)
    first, second = file_hashes(root), file_hashes(tmp_path)
    ic_test_csv = f"{sm.IC_ROOT}/data/{sm.IC_CSV['test']}"
    changed = {name for name in first if first[name] != second.get(name)}
    assert changed == {ic_test_csv, "manifest.json"}
    assert bigger["sizes"]["test_scale"] == 3 and manifest["sizes"]["test_scale"] == 1

    # keyword spotting: only the separate test set grows, by 2 speakers' words and 6 `_silence_` clips
    new = sorted(set(second) - set(first))
    assert all(name.startswith((f"{sm.KS_TEST_ROOT}/", f"{sm.IC_ROOT}/wavs/")) for name in new)
    ks_new = [name for name in new if name.startswith(sm.KS_TEST_ROOT)]
    silence = [name for name in ks_new if "/_silence_/" in name]
    assert len(silence) == 2 * SIZES["ks_silence"]
    assert sorted(int(name.rsplit("_", 3)[-3]) for name in silence) == list(range(3, 9))  # indices continue
    words = [name for name in ks_new if name not in silence]
    assert len(words) == 2 * (len(sm.COMMANDS) + 1)  # ks_unknown and ks_repeats are 1
    ks_added = {ks_speaker(name) for name in words}
    assert len(ks_added) == 2
    test_set = bigger["keyword_spotting"]["splits"]["test_set"]
    old_test_set = manifest["keyword_spotting"]["splits"]["test_set"]
    assert test_set["files"] == old_test_set["files"] + len(ks_new)
    assert set(test_set["speakers"]) == set(old_test_set["speakers"]) | ks_added
    assert set(test_set["added"]["speakers"]) == ks_added and test_set["added"]["silence"] == 6
    assert sum(test_set["labels"].values()) == test_set["files"]
    path = tmp_path / next(name for name in words if name.split("/")[1] == "yes")  # its speaker saying its word
    segment, clip = sm.to_pcm16(sm.keyword_segment(sm.speaker_of(bigger, path), "yes")), samples(path)
    offset = int(np.flatnonzero(clip)[0])
    assert np.array_equal(clip[offset : offset + segment.size], segment)

    # intent classification: 32 new utterances by 4 new speakers; the old rows all still there
    old_rows, new_rows = ic_rows(root)["test"], ic_rows(tmp_path)["test"]
    fields = [name for name in sm.IC_HEADER if name]
    old_set = {tuple(row[f] for f in fields) for row in old_rows}
    new_set = {tuple(row[f] for f in fields) for row in new_rows}
    assert old_set < new_set and len(new_rows) == len(old_rows) + 32 == len(new_set)
    assert [int(row[""]) for row in new_rows] == list(range(len(new_rows)))
    assert sorted(name for name in new if name.startswith(sm.IC_ROOT)) == sorted(
        f"{sm.IC_ROOT}/{row[0]}" for row in new_set - old_set)
    ic_added = {row[1] for row in new_set - old_set}
    ic_test = bigger["intent_classification"]["splits"]["test"]
    assert len(ic_added) == 4 and set(ic_test["added"]["speakers"]) == ic_added
    assert set(ic_test["speakers"]) == {row["speakerId"] for row in new_rows} and ic_test["files"] == len(new_rows)
    assert sum(ic_test["intents"].values()) == len(new_rows)
    row = next(row for row in new_rows if row["speakerId"] in ic_added)
    audio = sm.utterance_audio(sm.speaker_of(bigger, tmp_path / sm.IC_ROOT / row["path"]), row["transcription"])
    assert np.array_equal(samples(tmp_path / sm.IC_ROOT / row["path"]), sm.to_pcm16(audio))

    # the new speakers are in no other group of any task, nor the corpus, nor each other's
    settings = {}
    for task, splits in (("keyword_spotting", (*sm.SPLITS, "test_set")), ("intent_classification", sm.SPLITS),
                         ("asr", sm.SPLITS), ("corpus", sm.CORPUS_SPLITS)):
        for split in splits:
            for key, v in manifest[task]["splits"][split]["speakers"].items():
                settings[task, key] = sm.Speaker(v["voice"], v["variant"], v["pitch"], v["speed"])
    added = [sm.Speaker(**{k: v[k] for k in ("voice", "variant", "pitch", "speed")})
             for task, ids in (("keyword_spotting", ks_added), ("intent_classification", ic_added))
             for key, v in bigger[task]["splits"]["test_set" if task == "keyword_spotting" else "test"][
                 "speakers"].items() if key in ids]
    assert len(added) == 6 == len(set(added)) and not set(added) & set(settings.values())
    ids = {s.ks_id for s in settings.values()} | {s.fsc_id for s in settings.values()}
    assert not ({s.ks_id for s in added} | {s.fsc_id for s in added}) & ids

    from hf_corrdistill.superb import tasks

    ks = tasks.speech_commands(tmp_path / sm.KS_ROOT, tmp_path / sm.KS_TEST_ROOT)
    assert len(ks.splits["test"]) == test_set["files"]


# --------------------------------------------------------------------------------------------------- labels
@needs_espeak
def test_keyword_clips_hold_the_word_of_their_folder(mini):
    root, manifest = mini
    ks = ks_splits(root)
    chosen = [root / sm.KS_ROOT / f for split in sm.SPLITS for f in ks[split][::5]]  # commands and unknown words
    chosen += sorted((root / sm.KS_TEST_ROOT / "yes").glob("*.wav"))
    for path in chosen:
        word, relative = path.parent.name, path.relative_to(root)
        speaker = sm.speaker_of(manifest, path)
        segment = sm.to_pcm16(sm.keyword_segment(speaker, word))
        clip = samples(path)
        offset = int(np.flatnonzero(clip)[0])  # zero padding: the word starts at the first non-zero sample
        assert np.array_equal(clip[offset : offset + segment.size], segment), relative
        assert not clip[:offset].any() and not clip[offset + segment.size :].any()
    # a test-set `_unknown_` clip is one of the other words said by its speaker
    unknown = sorted((root / sm.KS_TEST_ROOT / "_unknown_").glob("*.wav"))[0]
    speaker, clip = sm.speaker_of(manifest, unknown), samples(unknown)
    clip = clip[np.flatnonzero(clip)[0] :]
    assert any(np.array_equal(clip[: (s := sm.to_pcm16(sm.keyword_segment(speaker, w))).size], s)
               for w in sm.UNKNOWN_WORDS)


@needs_espeak
def test_corpus_is_speech_of_its_speakers_over_the_tasks_vocabulary(mini):
    root, manifest = mini
    files = sorted((root / sm.CORPUS_ROOT).rglob("*.flac"))
    assert len(files) == sum(split["files"] for split in manifest["corpus"]["splits"].values())
    hours = sum(sf.info(p).frames for p in files) / sm.SAMPLE_RATE / 3600
    assert 0.5 * SIZES["corpus_hours"] < hours < 2 * SIZES["corpus_hours"]
    assert all(sf.info(p).samplerate == sm.SAMPLE_RATE and sf.info(p).channels == 1 for p in files)
    assert {sm.speaker_of(manifest, p) for p in files}  # every file's speaker is in the manifest
    vocabulary = sm.corpus_vocabulary()
    assert set(sm.COMMANDS) <= set(vocabulary) and "kitchen" in vocabulary and "farmer" in vocabulary
    # the generator's first text, spoken by its file's speaker, is one of the speakers' first utterances
    text = sm.corpus_text(sm._rng(0, "corpus"), vocabulary)
    first = sorted((root / sm.CORPUS_ROOT / "train").glob("*-0000.flac"))
    assert sum(np.array_equal(samples(p), sm.to_pcm16(sm.utterance_audio(sm.speaker_of(manifest, p), text)))
               for p in first) == 1


@needs_espeak
def test_keyword_classes_in_every_split(mini):
    root, manifest = mini
    for split, files in ks_splits(root).items():
        words = {f.split("/")[0] for f in files}
        assert set(sm.COMMANDS) <= words and words - set(sm.COMMANDS) <= set(sm.UNKNOWN_WORDS)
        assert words - set(sm.COMMANDS), f"no _unknown_ word in {split}"
        assert manifest["keyword_spotting"]["splits"][split]["files"] == len(files)
        assert files == sorted(files)
    # `_silence_` for train/dev: background noise long enough for 80/20 1-s crops
    background = sorted((root / sm.KS_ROOT / "_background_noise_").glob("*.wav"))
    assert len(background) == 4 and all(sf.info(p).frames >= 5 * sm.SAMPLE_RATE for p in background)
    test_set = root / sm.KS_TEST_ROOT
    labels = {p.name for p in test_set.iterdir()}
    assert labels == set(sm.KS_LABELS)
    counts = {label: len(list((test_set / label).glob("*.wav"))) for label in labels}
    assert min(counts.values()) >= 1 and counts["_silence_"] == 3
    assert counts == manifest["keyword_spotting"]["splits"]["test_set"]["labels"]
    silence = [np.sqrt(np.mean(samples(p).astype(float) ** 2)) for p in sorted((test_set / "_silence_").glob("*"))]
    assert min(silence) < 40 and max(silence) < 2000  # some near-silent, all low


@needs_espeak
def test_fluent_speech_commands_labels(mini):
    root, manifest = mini
    tables = ic_rows(root)
    header = (root / sm.IC_ROOT / "data" / "train_data.csv").read_text().splitlines()[0]
    assert header == ",path,speakerId,transcription,action,object,location"
    paraphrases = {intent: {p.lower() for p in texts} for intent, texts in sm.INTENTS.items()}
    for split, rows in tables.items():
        assert [int(row[""]) for row in rows] == list(range(len(rows)))
        intents = {(row["action"], row["object"], row["location"]) for row in rows}
        assert intents == set(sm.INTENTS), f"{split} lacks intents"
        for row in rows:
            intent = (row["action"], row["object"], row["location"])
            assert row["transcription"].lower() in paraphrases[intent]
            assert re.fullmatch(r"wavs/speakers/\w{16}/[0-9a-f-]{36}\.wav", row["path"])
            assert (root / sm.IC_ROOT / row["path"]).is_file()
        assert manifest["intent_classification"]["splits"][split]["files"] == len(rows)
    train = tables["train"]
    assert {r["action"] for r in train} == set(sm.ACTIONS)
    assert {r["object"] for r in train} == set(sm.OBJECTS)
    assert {r["location"] for r in train} == set(sm.LOCATIONS)
    for row in [*train[:2], tables["dev"][0], tables["test"][-1]]:
        path = root / sm.IC_ROOT / row["path"]
        expected = sm.to_pcm16(sm.utterance_audio(sm.speaker_of(manifest, path), row["transcription"]))
        assert np.array_equal(samples(path), expected), row["path"]


@needs_espeak
def test_librispeech_transcripts_match_audio(mini):
    root, manifest = mini
    sentences = {}
    for split, folder in sm.ASR_FOLDERS.items():
        lines = asr_transcripts(root, split)
        flacs = sorted(p.stem for p in (root / sm.ASR_ROOT / folder).glob("*/*/*.flac"))
        assert sorted(lines) == flacs and len(flacs) == manifest["asr"]["splits"][split]["files"]
        for utterance, text in lines.items():
            speaker, chapter, index = utterance.split("-")
            words = text.lower().split()
            assert re.fullmatch(r"\d{4}", index) and len(words) in range(3, 6) and set(words) <= set(sm.ASR_WORDS)
            assert all(a != b for a, b in zip(words, words[1:], strict=False)), text  # no word twice in a row
            assert (root / sm.ASR_ROOT / folder / speaker / chapter / f"{utterance}.flac").is_file()
        sentences[split] = set(lines.values())
    assert not (sentences["train"] & sentences["dev"] or sentences["train"] & sentences["test"])
    for split in sm.SPLITS:
        utterance, text = sorted(asr_transcripts(root, split).items())[0]
        speaker, chapter, _ = utterance.split("-")
        path = root / sm.ASR_ROOT / sm.ASR_FOLDERS[split] / speaker / chapter / f"{utterance}.flac"
        expected = sm.to_pcm16(sm.utterance_audio(sm.speaker_of(manifest, path), text.lower()))
        assert np.array_equal(samples(path), expected), utterance


@needs_espeak
def test_audio_format_everywhere(mini):
    root, manifest = mini
    audio = sorted(p for p in root.rglob("*") if p.suffix in AUDIO)
    assert audio
    for path in audio:
        info = sf.info(path)
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16"), path
        top = path.relative_to(root).parts[0]
        assert path.suffix == (".wav" if top in (sm.KS_ROOT, sm.KS_TEST_ROOT, sm.IC_ROOT) else ".flac"), path
        if top in (sm.KS_ROOT, sm.KS_TEST_ROOT) and path.parent.name != "_background_noise_":
            assert info.frames == sm.SAMPLE_RATE, path
    assert json.loads((root / "manifest.json").read_text()) == manifest
    with pytest.raises(KeyError):
        sm.speaker_of(manifest, "LibriSpeech/dev-clean/1/2/1-2-0000.flac")


@needs_espeak
def test_the_superb_loaders_read_it(mini):
    from hf_corrdistill.superb import tasks

    root, manifest = mini
    ks = tasks.speech_commands(root / sm.KS_ROOT, root / sm.KS_TEST_ROOT)
    splits = manifest["keyword_spotting"]["splits"]
    for split in ("train", "dev"):
        assert len([i for i in ks.splits[split] if i.frames < 0]) == splits[split]["files"]
    assert len(ks.splits["test"]) == splits["test_set"]["files"]
    ic = tasks.fluent_speech_commands(root / sm.IC_ROOT)
    assert {s: len(items) for s, items in ic.splits.items()} == {
        s: manifest["intent_classification"]["splits"][s]["files"] for s in sm.SPLITS}
    asr = tasks.librispeech(root / sm.ASR_ROOT, tuple(sm.ASR_FOLDERS.values()))
    assert {s: len(items) for s, items in asr.splits.items()} == {
        s: manifest["asr"]["splits"][s]["files"] for s in sm.SPLITS}
