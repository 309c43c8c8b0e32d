"""Fine-tuning the student with the stock Hugging Face tools: heads, auto classes, the loading sequences of the
example scripts `run_audio_classification.py` and `run_speech_recognition_ctc.py`, pipelines and remote code.

The example scripts themselves need the Hub (datasets, `evaluate` metrics); each test below replays their loading
and training calls, in its own words, on the shipped SUPERB mini corpus.
"""

import contextlib
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import datasets
import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F
from conftest import DEMO, save_tiny_student, tiny_student_config
from safetensors.torch import load_file
from transformers import (
    AutoConfig,
    AutoFeatureExtractor,
    AutoModelForAudioClassification,
    AutoModelForCTC,
    AutoProcessor,
    AutoTokenizer,
    Trainer,
    TrainingArguments,
    Wav2Vec2CTCTokenizer,
    Wav2Vec2Processor,
    pipeline,
)

from hf_corrdistill import CorrDistillForCTC, CorrDistillForSequenceClassification
from hf_corrdistill.models.corrdistill.modeling_corrdistill import CorrDistillModel, compute_span_mask

SUPERB_MINI = DEMO / "superb_mini"
KS_WORDS = ("down", "go", "left", "yes")  # 3 clips each in the mini keyword-spotting set
LIBRISPEECH = SUPERB_MINI / "LibriSpeech" / "train-clean-100"
HEAD_KEYS = {
    CorrDistillForSequenceClassification: {
        "projector.weight", "projector.bias", "classifier.weight", "classifier.bias"
    },
    CorrDistillForCTC: {"lm_head.weight", "lm_head.bias"},
}


@contextlib.contextmanager
def transformers_warnings() -> Iterator[list[str]]:
    """Collect what the `transformers` loggers warn (they do not propagate to pytest's capture)."""
    records: list[str] = []
    handler = logging.Handler(level=logging.WARNING)
    handler.emit = lambda record: records.append(record.getMessage())
    root = logging.getLogger("transformers")
    root.addHandler(handler)
    try:
        yield records
    finally:
        root.removeHandler(handler)


def read_audio(path: Path) -> np.ndarray:
    audio, rate = sf.read(path, dtype="float32")
    assert rate == 16000 and audio.ndim == 1, path
    return audio


def training_args(output_dir: Path, **overrides) -> TrainingArguments:
    values = dict(
        output_dir=str(output_dir), use_cpu=True, report_to="none", save_strategy="no", logging_steps=1, seed=0,
        disable_tqdm=True, dataloader_num_workers=0,
    )
    values.update(overrides)
    return TrainingArguments(**values)


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """The models here are tiny: on a busy 2-core machine a second intra-op thread only waits (10x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def student_folder(tmp_path_factory) -> Path:
    """A distilled student as `train.py` leaves it: the pre-training model and the feature extractor."""
    return save_tiny_student(tmp_path_factory.mktemp("student"))


# ---------------------------------------------------------------------------------------------------------------
# A distilled student loads into both heads


@pytest.mark.parametrize(
    "auto_class,head_class,kwargs",
    [
        (AutoModelForAudioClassification, CorrDistillForSequenceClassification, {"num_labels": 4}),
        (AutoModelForCTC, CorrDistillForCTC, {"vocab_size": 12, "pad_token_id": 9}),
        # the CTC script's SpecAugment setting adds `masked_spec_embed`, which no student has
        (AutoModelForCTC, CorrDistillForCTC, {"vocab_size": 12, "mask_time_prob": 0.05}),
    ],
)
def test_student_folder_loads_into_the_heads(student_folder, auto_class, head_class, kwargs):
    saved = load_file(student_folder / "model.safetensors")
    with transformers_warnings() as warnings:
        model, info = auto_class.from_pretrained(student_folder, output_loading_info=True, **kwargs)
    assert type(model) is head_class
    assert set(info["missing_keys"]) == HEAD_KEYS[head_class]  # only the new head, every backbone weight loaded
    assert not info["unexpected_keys"] and not info["mismatched_keys"]  # the distillation heads are dropped quietly
    backbone = {f"corrdistill.{name}": value for name, value in model.corrdistill.state_dict().items()}
    assert {name for name in saved if not name.startswith("prediction_heads.")} == set(backbone) - {
        "corrdistill.masked_spec_embed"
    }
    for name, value in saved.items():
        if name in backbone:
            assert torch.equal(backbone[name], value), name
    report = "\n".join(warnings)  # the load report names the new head, and nothing of the backbone
    assert "LOAD REPORT" in report and all(name in report for name in HEAD_KEYS[head_class]), report
    assert "corrdistill." not in report and "prediction_heads" not in report, report
    # fresh heads: initialised as the other linear layers (normal(0, 0.02), zero bias), not left empty
    for name in HEAD_KEYS[head_class]:
        tensor = model.get_parameter(name)
        if name.endswith("bias"):
            assert torch.equal(tensor, torch.zeros_like(tensor)), name
        else:
            assert 0.01 < tensor.std().item() < 0.03, name
    if kwargs.get("mask_time_prob"):
        embed = model.corrdistill.masked_spec_embed
        assert embed.shape == (32,) and 0.0 <= embed.min() and embed.max() < 1.0  # uniform, as HuBERT's


def test_saved_heads_carry_auto_map_and_reload(tmp_path):
    model = CorrDistillForCTC(tiny_student_config(vocab_size=12)).eval()
    model.save_pretrained(tmp_path)
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    assert auto_map["AutoModelForCTC"] == "modeling_corrdistill.CorrDistillForCTC"
    assert auto_map["AutoModelForAudioClassification"] == "modeling_corrdistill.CorrDistillForSequenceClassification"
    audio = torch.randn(2, 8000)
    reloaded = AutoModelForCTC.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(reloaded(audio).logits, model(audio).logits, rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------------------------
# Heads: CTC loss, pooling, freezing, SpecAugment


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_ctc_loss_is_torch_ctc_loss_on_the_model_log_probs(reduction):
    torch.manual_seed(0)
    config = tiny_student_config(vocab_size=8, pad_token_id=0, ctc_loss_reduction=reduction)
    model = CorrDistillForCTC(config).double().eval()
    audio = torch.randn(2, 16000, dtype=torch.float64)
    mask = torch.ones(2, 16000, dtype=torch.long)
    mask[1, 9000:] = 0
    audio = audio * mask
    labels = torch.tensor([[3, 4, 5, 6, 2], [2, 7, 7, -100, -100]])
    out = model(audio, attention_mask=mask, labels=labels)
    assert out.logits.shape == (2, 49, 8) and out.loss.shape == ()

    frames = model._get_feat_extract_output_lengths(mask.sum(-1))
    assert frames.tolist() == [49, 27]
    log_probs = out.logits.log_softmax(-1)
    per_utterance = torch.stack(
        [
            F.ctc_loss(log_probs[b, : frames[b]], target[target >= 0], frames[b : b + 1], (target >= 0).sum()[None])
            for b, target in enumerate(labels)
        ]
    )  # unbatched ctc_loss, one utterance at a time, "mean" here dividing by its target length
    target_lengths = (labels >= 0).sum(-1).double()
    expected = (per_utterance * target_lengths).sum() if reduction == "sum" else per_utterance.mean()
    torch.testing.assert_close(out.loss, expected, rtol=0, atol=1e-10)

    out.loss.backward()  # gradients reach the head and the backbone, shaped as their parameters
    assert model.lm_head.weight.grad.shape == (8, 32) and model.lm_head.weight.grad.abs().sum() > 0
    assert model.corrdistill.encoder.layers[0].attention.q_proj.weight.grad.abs().sum() > 0


def test_ctc_loss_without_attention_mask_uses_every_frame():
    torch.manual_seed(0)
    model = CorrDistillForCTC(tiny_student_config(vocab_size=8)).eval()
    audio = torch.randn(1, 16000)
    labels = torch.tensor([[3, 4, 5]])
    with torch.no_grad():
        plain = model(audio, labels=labels).loss
        masked = model(audio, attention_mask=torch.ones(1, 16000, dtype=torch.long), labels=labels).loss
    torch.testing.assert_close(plain, masked)
    with pytest.raises(ValueError, match="vocab_size"):
        model(audio, labels=torch.tensor([[8]]))


def test_classifier_pools_only_valid_frames():
    torch.manual_seed(0)
    model = CorrDistillForSequenceClassification(tiny_student_config(num_labels=3, feat_extract_norm="layer")).eval()
    audio = torch.randn(2, 16000)
    mask = torch.ones(2, 16000, dtype=torch.long)
    mask[1, 8000:] = 0
    with torch.no_grad():
        padded = model(audio * mask, attention_mask=mask).logits
        alone = model(audio[1:, :8000]).logits
    torch.testing.assert_close(padded[1], alone[0], atol=1e-5, rtol=1e-5)
    loss = model(audio, attention_mask=mask, labels=torch.tensor([0, 2])).loss
    torch.testing.assert_close(loss, F.cross_entropy(model(audio, attention_mask=mask).logits, torch.tensor([0, 2])))


def test_freezing_and_weighted_layer_sum():
    config = tiny_student_config(num_labels=3, use_weighted_layer_sum=True)
    model = CorrDistillForSequenceClassification(config)
    torch.testing.assert_close(model.layer_weights.detach(), torch.full((3,), 1 / 3))  # input + 2 layers, uniform
    model.freeze_feature_encoder()
    model(torch.randn(2, 8000), labels=torch.tensor([0, 1])).loss.backward()
    cnn = list(model.corrdistill.feature_extractor.parameters())
    assert cnn and all(not p.requires_grad and p.grad is None for p in cnn)
    assert model.layer_weights.grad is not None and model.layer_weights.grad.abs().sum() > 0
    assert model.corrdistill.feature_projection.projection.weight.grad is not None
    model.freeze_base_model()
    assert not any(p.requires_grad for p in model.corrdistill.parameters())
    assert all(p.requires_grad for p in (model.layer_weights, model.projector.weight, model.classifier.weight))

    ctc = CorrDistillForCTC(tiny_student_config(vocab_size=8))
    ctc.freeze_feature_encoder()
    assert not any(p.requires_grad for p in ctc.corrdistill.feature_extractor.parameters())
    assert all(p.requires_grad for name, p in ctc.named_parameters() if ".feature_extractor." not in name)


def test_span_mask_respects_lengths_and_counts():
    torch.manual_seed(0)
    lengths = torch.tensor([100, 40, 5, 0])
    mask = compute_span_mask(lengths, 100, mask_prob=0.5, mask_length=10, min_masks=2)
    assert mask.shape == (4, 100) and mask.dtype == torch.bool
    assert not mask[1, 40:].any() and not mask[2:].any()  # inside each row; rows shorter than a span get none
    assert 10 <= mask[1].sum() <= 20 and 10 <= mask[0].sum() <= 60  # 2 spans; 5 spans, overlaps allowed
    for row in mask[:2]:
        edges = torch.diff(F.pad(row.int(), (1, 1)))
        runs = (edges == -1).nonzero().flatten() - (edges == 1).nonzero().flatten()
        assert len(runs) > 0 and (runs >= 10).all()  # whole spans of 10, merged where they overlap


def test_spec_augment_only_in_training():
    torch.manual_seed(0)
    model = CorrDistillModel(tiny_student_config(mask_time_prob=0.5, mask_feature_prob=0.2, mask_feature_length=4))
    hidden = torch.randn(2, 60, 32)
    frame_mask = torch.arange(60)[None, :] < torch.tensor([60, 30])[:, None]
    model.eval()
    assert torch.equal(model._mask_hidden_states(hidden, frame_mask), hidden)
    model.train()
    masked = model._mask_hidden_states(hidden, frame_mask)
    embed = model.masked_spec_embed.detach()
    zeroed = (masked == 0).all(1)  # (B, H) channels zeroed on every frame
    assert zeroed.any(-1).all()
    replaced = ((masked == embed) | zeroed[:, None, :]).all(-1)  # (B, F) frames now holding the learned vector
    assert replaced[0].sum() >= 20 and 0 < replaced[1].sum() and not replaced[1, 30:].any()
    kept = ~replaced[..., None] & ~zeroed[:, None, :]
    assert torch.equal(masked[kept], hidden[kept])
    # no masking: no vector, training output unchanged by the mask code
    plain = CorrDistillModel(tiny_student_config())
    assert not hasattr(plain, "masked_spec_embed")
    assert torch.equal(plain.train()._mask_hidden_states(hidden, frame_mask), hidden)
    # explicit indices in eval mode
    chosen = torch.zeros(2, 60, dtype=torch.bool)
    chosen[:, :3] = True
    assert torch.equal(model.eval()._mask_hidden_states(hidden, frame_mask, chosen)[:, :3], embed.expand(2, 3, 32))


# ---------------------------------------------------------------------------------------------------------------
# run_audio_classification.py, replayed


def random_crop(audio: np.ndarray, max_seconds: float, rate: int = 16000) -> np.ndarray:
    """The script's `random_subsample`: a random window of at most `max_seconds`."""
    window = int(round(rate * max_seconds))
    if len(audio) <= window:
        return audio
    start = np.random.randint(0, len(audio) - window)
    return audio[start : start + window]


def keyword_dataset() -> datasets.Dataset:
    """The KS mini set as a `datasets` table with an audio column and a `ClassLabel`, as the script loads it."""
    rows = {"audio": [], "label": []}
    for word in KS_WORDS:
        for path in sorted((SUPERB_MINI / "speech_commands_v0.01" / word).glob("*.wav")):
            rows["audio"].append({"array": read_audio(path), "sampling_rate": 16000, "path": str(path)})
            rows["label"].append(word)
    features = datasets.Features(
        {
            "audio": {
                "array": datasets.Sequence(datasets.Value("float32")),
                "sampling_rate": datasets.Value("int32"),
                "path": datasets.Value("string"),
            },
            "label": datasets.ClassLabel(names=list(KS_WORDS)),
        }
    )
    return datasets.Dataset.from_dict(rows, features=features)


def mean_loss(model, feature_extractor, dataset: datasets.Dataset) -> float:
    arrays = [np.asarray(row["array"], dtype=np.float32) for row in dataset["audio"]]
    batch = feature_extractor(arrays, sampling_rate=16000, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model.eval()(**batch, labels=torch.tensor(dataset["label"])).loss.item()


@pytest.fixture(scope="module")
def classification_run(student_folder, tmp_path_factory) -> SimpleNamespace:
    """`run_audio_classification.py --model_name_or_path <student> --freeze_feature_encoder --do_train
    --remove_unused_columns False --max_length_seconds 1 --num_train_epochs 8`, its calls replayed in order."""
    output_dir = tmp_path_factory.mktemp("ks-finetuned")
    raw = keyword_dataset()
    feature_extractor = AutoFeatureExtractor.from_pretrained(student_folder, return_attention_mask=True)
    model_input_name = feature_extractor.model_input_names[0]

    def train_transforms(batch):
        wavs = [random_crop(np.asarray(audio["array"], dtype=np.float32), 1.0) for audio in batch["audio"]]
        inputs = feature_extractor(wavs, sampling_rate=feature_extractor.sampling_rate)
        return {model_input_name: inputs.get(model_input_name), "labels": list(batch["label"])}

    labels = raw.features["label"].names
    label2id = {label: str(i) for i, label in enumerate(labels)}
    id2label = {str(i): label for i, label in enumerate(labels)}
    config = AutoConfig.from_pretrained(
        student_folder, num_labels=len(labels), label2id=label2id, id2label=id2label,
        finetuning_task="audio-classification",
    )
    torch.manual_seed(0)
    model = AutoModelForAudioClassification.from_pretrained(
        student_folder, config=config, ignore_mismatched_sizes=False
    )
    model.freeze_feature_encoder()
    loss_before = mean_loss(model, feature_extractor, raw)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}

    train = raw.shuffle(seed=0)
    train.set_transform(train_transforms, output_all_columns=False)
    args = training_args(
        output_dir, per_device_train_batch_size=4, num_train_epochs=8, learning_rate=3e-3, remove_unused_columns=False
    )
    trainer = Trainer(model=model, args=args, train_dataset=train, processing_class=feature_extractor)
    result = trainer.train(resume_from_checkpoint=None)
    trainer.save_model()
    trainer.save_state()
    return SimpleNamespace(
        folder=output_dir, model=model.eval(), feature_extractor=feature_extractor, raw=raw, before=before,
        loss_before=loss_before, loss_after=mean_loss(model, feature_extractor, raw), result=result,
        losses=[entry["loss"] for entry in trainer.state.log_history if "loss" in entry],
    )


def test_audio_classification_script_trains(classification_run):
    run = classification_run
    assert isinstance(run.model, CorrDistillForSequenceClassification)
    assert run.model.config.num_labels == 4  # (`finetuning_task` is dropped by AutoConfig, for HuBERT too)
    assert AutoConfig.from_pretrained(run.folder).id2label == dict(enumerate(KS_WORDS))  # int keys once saved
    assert len(run.losses) == 24 and all(np.isfinite(run.losses))  # 8 epochs of 3 batches
    assert run.loss_after < run.loss_before  # on the (uncropped) training clips
    changed = {name for name, p in run.model.named_parameters() if not torch.equal(p, run.before[name])}
    assert {"classifier.weight", "projector.weight", "corrdistill.encoder.layers.1.attention.q_proj.weight"} <= changed
    assert not any(".feature_extractor." in name for name in changed)  # frozen CNN
    saved = json.loads((run.folder / "config.json").read_text())
    assert saved["architectures"] == ["CorrDistillForSequenceClassification"]
    assert saved["auto_map"]["AutoModelForAudioClassification"].endswith("CorrDistillForSequenceClassification")
    assert (run.folder / "preprocessor_config.json").exists() and (run.folder / "modeling_corrdistill.py").exists()


def test_audio_classification_pipeline(classification_run):
    run = classification_run
    classify = pipeline("audio-classification", model=str(run.folder))
    clip = np.asarray(run.raw[0]["audio"]["array"], dtype=np.float32)
    predictions = classify(clip)
    assert {p["label"] for p in predictions} == set(KS_WORDS)
    assert abs(sum(p["score"] for p in predictions) - 1.0) < 1e-4
    with torch.no_grad():
        probs = run.model(**run.feature_extractor(clip, sampling_rate=16000, return_tensors="pt")).logits.softmax(-1)
    assert predictions[0]["label"] == KS_WORDS[probs.argmax().item()]
    assert abs(predictions[0]["score"] - probs.max().item()) < 1e-5


REMOTE_CLASSIFIER = """
import sys, torch
from transformers import AutoModelForAudioClassification, pipeline
folder, inputs, output = sys.argv[1:]
model = AutoModelForAudioClassification.from_pretrained(folder, trust_remote_code=True).eval()
assert "hf_corrdistill" not in sys.modules, "the package was imported"
assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
inputs = torch.load(inputs)
with torch.no_grad():
    logits = model(**inputs).logits
classify = pipeline("audio-classification", model=folder, trust_remote_code=True)
top = classify(inputs["input_values"][0].numpy(), top_k=1)[0]
assert "hf_corrdistill" not in sys.modules, "the package was imported"
torch.save({"logits": logits, "label": top["label"], "score": top["score"]}, output)
"""


def test_fine_tuned_classifier_runs_as_remote_code(classification_run, tmp_path):
    run = classification_run
    clips = [np.asarray(run.raw[i]["audio"]["array"], dtype=np.float32) for i in (0, 4, 11)]
    inputs = run.feature_extractor(clips, sampling_rate=16000, padding=True, return_tensors="pt")
    torch.save(dict(inputs), tmp_path / "inputs.pt")
    paths = [str(run.folder), str(tmp_path / "inputs.pt"), str(tmp_path / "o.pt")]
    command = [sys.executable, "-c", REMOTE_CLASSIFIER, *paths]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    remote = torch.load(tmp_path / "o.pt")
    with torch.no_grad():
        local = run.model(**inputs).logits
    torch.testing.assert_close(remote["logits"], local, rtol=0, atol=1e-5)
    assert remote["label"] == KS_WORDS[local[0].argmax().item()]


# ---------------------------------------------------------------------------------------------------------------
# run_speech_recognition_ctc.py, replayed


def librispeech_dataset() -> datasets.Dataset:
    rows = {"audio": [], "text": []}
    for transcript in sorted(LIBRISPEECH.glob("*/*/*.trans.txt")):
        for line in transcript.read_text().splitlines():
            utterance, text = line.split(" ", 1)
            audio = read_audio(transcript.parent / f"{utterance}.flac")
            rows["audio"].append({"array": audio, "sampling_rate": 16000})
            rows["text"].append(text)
    return datasets.Dataset.from_dict(rows)


def character_vocabulary(texts: list[str], word_delimiter: str, unk: str, pad: str) -> dict[str, int]:
    """The script's `create_vocabulary_from_data`: sorted characters, the space renamed, then unk and pad."""
    vocab = {char: i for i, char in enumerate(sorted(set(" ".join(texts))))}
    vocab[word_delimiter] = vocab.pop(" ")
    vocab[unk] = len(vocab)
    vocab[pad] = len(vocab)
    return vocab


@dataclass
class CTCCollator:
    """The script's `DataCollatorCTCWithPadding`: audio and labels padded apart, label padding set to -100."""

    processor: Wav2Vec2Processor

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        batch = self.processor.pad(
            [{"input_values": f["input_values"]} for f in features], padding="longest", return_tensors="pt"
        )
        labels = self.processor.pad(
            labels=[{"input_ids": f["labels"]} for f in features], padding="longest", return_tensors="pt"
        )
        batch["labels"] = labels["input_ids"].masked_fill(labels.attention_mask.ne(1), -100)
        if "attention_mask" in batch:
            batch["attention_mask"] = batch["attention_mask"].to(torch.long)
        return batch


def test_ctc_script_sequence(student_folder, tmp_path):
    """`run_speech_recognition_ctc.py --model_name_or_path <student> --do_train --freeze_feature_encoder
    --gradient_checkpointing --ctc_zero_infinity`, its calls replayed in order (no --tokenizer_name_or_path), on a
    local student folder with this package imported; test_stock_ctc.py replays them on a published student given as a
    Hub id, in a process without this package."""
    output_dir = tmp_path / "asr"
    raw = librispeech_dataset().map(lambda row: {"target_text": row["text"].lower() + " "}, remove_columns=["text"])
    config = AutoConfig.from_pretrained(student_folder)

    output_dir.mkdir()
    vocab = character_vocabulary(raw["target_text"], "|", "[UNK]", "[PAD]")
    (output_dir / "vocab.json").write_text(json.dumps(vocab))
    tokenizer_kwargs = {  # the script: by `tokenizer_class` if the config has one, else by `model_type`
        "config": config if config.tokenizer_class is not None else None,
        "tokenizer_type": config.model_type if config.tokenizer_class is None else None,
        "unk_token": "[UNK]",
        "pad_token": "[PAD]",
        "word_delimiter_token": "|",
    }
    tokenizer = AutoTokenizer.from_pretrained(output_dir, **tokenizer_kwargs)
    assert isinstance(tokenizer, Wav2Vec2CTCTokenizer) and tokenizer.pad_token_id == vocab["[PAD]"]
    feature_extractor = AutoFeatureExtractor.from_pretrained(student_folder)
    config.update(
        {
            "feat_proj_dropout": 0.0,
            "attention_dropout": 0.0,
            "hidden_dropout": 0.0,
            "final_dropout": 0.0,
            "mask_time_prob": 0.05,
            "mask_time_length": 10,
            "mask_feature_prob": 0.0,
            "mask_feature_length": 10,
            "gradient_checkpointing": True,
            "layerdrop": 0.0,
            "ctc_loss_reduction": "mean",
            "ctc_zero_infinity": True,
            "pad_token_id": tokenizer.pad_token_id,
            "vocab_size": len(tokenizer),
            "activation_dropout": 0.0,
            "add_adapter": False,
        }
    )
    torch.manual_seed(0)
    model = AutoModelForCTC.from_pretrained(student_folder, config=config)
    assert isinstance(model, CorrDistillForCTC) and model.lm_head.out_features == len(tokenizer)
    assert model.is_activation_checkpointing and hasattr(model.corrdistill, "masked_spec_embed")
    model.freeze_feature_encoder()

    def prepare_dataset(row):
        audio = row["audio"]
        inputs = feature_extractor(np.asarray(audio["array"], dtype=np.float32), sampling_rate=audio["sampling_rate"])
        return {
            "input_values": inputs.input_values[0],
            "input_length": len(audio["array"]),
            "labels": tokenizer(row["target_text"]).input_ids,
        }

    vectorized = raw.map(prepare_dataset, remove_columns=raw.column_names)
    feature_extractor.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    config.save_pretrained(output_dir)
    assert AutoTokenizer.from_pretrained(output_dir).get_vocab() == tokenizer.get_vocab()  # now from its own files
    try:
        processor = AutoProcessor.from_pretrained(output_dir)
    except (OSError, KeyError):
        processor = Wav2Vec2Processor.from_pretrained(output_dir)
    assert isinstance(processor, Wav2Vec2Processor)

    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    args = training_args(tmp_path / "trainer", per_device_train_batch_size=2, max_steps=4, learning_rate=1e-3)
    trainer = Trainer(
        model=model, args=args, data_collator=CTCCollator(processor), train_dataset=vectorized,
        processing_class=processor,
    )
    trainer.train(resume_from_checkpoint=None)  # the script resumes from a local --model_name_or_path: see README
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 4 and all(np.isfinite(losses))
    assert not torch.equal(model.lm_head.weight, before["lm_head.weight"])
    assert not torch.equal(model.corrdistill.masked_spec_embed, before["corrdistill.masked_spec_embed"])

    batch = CTCCollator(processor)([vectorized[i] for i in range(len(vectorized))])
    with torch.no_grad():
        logits = model.eval()(batch["input_values"], attention_mask=batch["attention_mask"]).logits
    texts = processor.batch_decode(logits.argmax(-1))
    assert len(texts) == len(vectorized) and all(isinstance(text, str) for text in texts)
    labels = batch["labels"].masked_fill(batch["labels"] == -100, tokenizer.pad_token_id)
    references = processor.batch_decode(labels, group_tokens=False)
    assert references[0] == raw[0]["target_text"].strip()

    trainer.save_model(output_dir)  # weights, config and the processor: an ASR pipeline folder
    transcribe = pipeline("automatic-speech-recognition", model=str(output_dir))
    clip = np.asarray(raw[0]["audio"]["array"], dtype=np.float32)
    with torch.no_grad():  # alone, unpadded: the first CNN layer's GroupNorm sees the padding of a batch
        alone = model(processor(clip, sampling_rate=16000, return_tensors="pt").input_values).logits.argmax(-1)
    assert transcribe(clip)["text"] == processor.batch_decode(alone)[0]
