"""A published student fine-tunes with the stock CTC example, `run_speech_recognition_ctc.py`, given as a Hub id.

Both export formats are staged as `python -m hf_corrdistill.hub push --dry_run` stages them, placed in a temporary
Hugging Face cache as the Hub repository `org/tiny-student-<format>` (HF_HUB_OFFLINE=1), and a fresh process that
cannot import this package replays the calls of the script as transformers 5 ships it, in order: its
`create_vocabulary_from_data`, `AutoConfig`, the tokenizer built from the new vocab.json with
`AutoTokenizer.from_pretrained(..., config=config, tokenizer_type=config.model_type)`, `AutoFeatureExtractor`, its
`config.update`, `AutoModelForCTC`, `freeze_feature_encoder`, `AutoProcessor` on the output directory that holds the
saved feature extractor, tokenizer and config, its `DataCollatorCTCWithPadding` and a few `Trainer` steps. The
tokenizer step of the 4.x script (`config` when the config names a `tokenizer_class`, else `tokenizer_type`) is
replayed beside it, and `AutoProcessor` on the published (pre-trained, vocabulary-less) repository too.

What the replay leaves out needs the Hub: `load_dataset` (the audio here is read with soundfile, already at 16 kHz),
the `evaluate` metrics, telemetry.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DEMO, save_tiny_student

from hf_corrdistill.hub.push import stage

LIBRISPEECH = DEMO / "superb_mini" / "LibriSpeech" / "train-clean-100"
TINY_HUBERT = DEMO / "tiny_teacher"  # a plain pre-trained HubertModel folder (config, weights, feature extractor)

SCRIPT = r'''
import functools, json, os, sys
sys.modules["hf_corrdistill"] = None  # importable here (editable install): made unimportable, as for a user

import numpy as np
import soundfile as sf
import torch
from datasets import Dataset, DatasetDict
from transformers import (AutoConfig, AutoFeatureExtractor, AutoModelForCTC, AutoProcessor, AutoTokenizer, Trainer,
                          TrainingArguments, Wav2Vec2Processor, pipeline)

model_name_or_path, output_dir, data_dir, hubert_dir, report = sys.argv[1:]
trust_remote_code = True  # --trust_remote_code
torch.manual_seed(0)

# 1. the dataset: 6 training and 2 evaluation utterances, columns "audio" and "text"
rows = []
for root, _, files in sorted(os.walk(data_dir)):
    for name in sorted(f for f in files if f.endswith(".trans.txt")):
        for line in open(os.path.join(root, name)).read().splitlines():
            utterance, text = line.split(" ", 1)
            array, rate = sf.read(os.path.join(root, utterance + ".flac"), dtype="float32")
            rows.append({"audio": {"array": array, "sampling_rate": rate}, "text": text})
rows = rows[:8]
raw_datasets = DatasetDict({
    "train": Dataset.from_list(rows[:6]),
    "eval": Dataset.from_list(rows[6:]),
})

# 2. remove_special_characters (no --chars_to_ignore)
raw_datasets = raw_datasets.map(lambda batch: {"target_text": batch["text"].lower() + " "}, remove_columns=["text"])
word_delimiter_token, unk_token, pad_token = "|", "[UNK]", "[PAD]"

# 3. the config
config = AutoConfig.from_pretrained(model_name_or_path, cache_dir=None, token=None,
                                    trust_remote_code=trust_remote_code)
config_tokenizer_class = config.tokenizer_class if hasattr(config, "tokenizer_class") else "<no attribute>"


def outcome(load):  # the class a loader returns, or the error it raises
    try:
        return type(load()).__name__
    except Exception as error:
        return f"error {type(error).__name__}"


# not the script's: what a user gets from AutoProcessor on the published repository and on a plain HuBERT folder
pretrained_processor = outcome(lambda: AutoProcessor.from_pretrained(model_name_or_path, trust_remote_code=True))
hubert_processor = outcome(lambda: AutoProcessor.from_pretrained(hubert_dir))


# 4. no --tokenizer_name_or_path: the vocabulary of the data, in the output directory
def create_vocabulary_from_data(datasets, word_delimiter_token=None, unk_token=None, pad_token=None):
    def extract_all_chars(batch):
        all_text = " ".join(batch["target_text"])
        vocab = list(set(all_text))
        return {"vocab": [vocab], "all_text": [all_text]}

    vocabs = datasets.map(extract_all_chars, batched=True, batch_size=-1, keep_in_memory=True,
                          remove_columns=datasets["train"].column_names)
    vocab_set = functools.reduce(lambda v1, v2: set(v1["vocab"][0]) | set(v2["vocab"][0]), vocabs.values())
    vocab_dict = {v: k for k, v in enumerate(sorted(vocab_set))}
    if word_delimiter_token is not None:
        vocab_dict[word_delimiter_token] = vocab_dict[" "]
        del vocab_dict[" "]
    if unk_token is not None:
        vocab_dict[unk_token] = len(vocab_dict)
    if pad_token is not None:
        vocab_dict[pad_token] = len(vocab_dict)
    return vocab_dict


tokenizer_name_or_path = output_dir
vocab_file = os.path.join(tokenizer_name_or_path, "vocab.json")
os.makedirs(tokenizer_name_or_path, exist_ok=True)
vocab_dict = create_vocabulary_from_data(raw_datasets, word_delimiter_token=word_delimiter_token,
                                         unk_token=unk_token, pad_token=pad_token)
with open(vocab_file, "w") as file:
    json.dump(vocab_dict, file)
special_tokens = {"unk_token": unk_token, "pad_token": pad_token, "word_delimiter_token": word_delimiter_token}
# the 4.x script: the tokenizer is defined by `tokenizer_class` if present in config else by `model_type` (read with
# getattr: the configs of transformers 5 have no `tokenizer_class` attribute unless their config.json sets one)
tokenizer_class = getattr(config, "tokenizer_class", None)
tokenizer_4x = outcome(lambda: AutoTokenizer.from_pretrained(
    tokenizer_name_or_path, token=None, trust_remote_code=trust_remote_code,
    config=config if tokenizer_class is not None else None,
    tokenizer_type=config.model_type if tokenizer_class is None else None, **special_tokens))
# the 5.x script: both the config and its model type
tokenizer_kwargs = {"config": config, "tokenizer_type": config.model_type, **special_tokens}

# 5. feature extractor, tokenizer, model
tokenizer = AutoTokenizer.from_pretrained(tokenizer_name_or_path, token=None, trust_remote_code=trust_remote_code,
                                          **tokenizer_kwargs)
feature_extractor = AutoFeatureExtractor.from_pretrained(model_name_or_path, cache_dir=None, token=None,
                                                         trust_remote_code=trust_remote_code)
config.update({  # the script's defaults
    "feat_proj_dropout": 0.0, "attention_dropout": 0.0, "hidden_dropout": 0.0, "final_dropout": 0.0,
    "mask_time_prob": 0.05, "mask_time_length": 10, "mask_feature_prob": 0.0, "mask_feature_length": 10,
    "gradient_checkpointing": False, "layerdrop": 0.0, "ctc_loss_reduction": "mean", "ctc_zero_infinity": False,
    "pad_token_id": tokenizer.pad_token_id, "vocab_size": len(tokenizer), "activation_dropout": 0.0,
    "add_adapter": False,
})
model = AutoModelForCTC.from_pretrained(model_name_or_path, cache_dir=None, config=config, token=None,
                                        trust_remote_code=trust_remote_code)
model.freeze_feature_encoder()

# 6. preprocessing
max_input_length = 20.0 * feature_extractor.sampling_rate
min_input_length = 0.0 * feature_extractor.sampling_rate
feature_extractor_input_name = feature_extractor.model_input_names[0]


def prepare_dataset(batch):
    sample = batch["audio"]
    inputs = feature_extractor(np.asarray(sample["array"], dtype=np.float32), sampling_rate=sample["sampling_rate"])
    batch[feature_extractor_input_name] = getattr(inputs, feature_extractor_input_name)[0]
    batch["input_length"] = len(np.asarray(sample["array"]).squeeze())
    batch["labels"] = tokenizer(batch["target_text"]).input_ids
    return batch


vectorized_datasets = raw_datasets.map(prepare_dataset, remove_columns=raw_datasets["train"].column_names)
vectorized_datasets = vectorized_datasets.filter(lambda length: min_input_length < length < max_input_length,
                                                 input_columns=["input_length"])

# 7. one processor from the files saved in the output directory
feature_extractor.save_pretrained(output_dir)
tokenizer.save_pretrained(output_dir)
config.save_pretrained(output_dir)
try:
    processor = AutoProcessor.from_pretrained(output_dir)
except (OSError, KeyError):
    processor = Wav2Vec2Processor.from_pretrained(output_dir)


class DataCollatorCTCWithPadding:
    def __init__(self, processor, feature_extractor_input_name="input_values"):
        self.processor, self.feature_extractor_input_name = processor, feature_extractor_input_name

    def __call__(self, features):
        input_features = [
            {self.feature_extractor_input_name: feature[self.feature_extractor_input_name]} for feature in features
        ]
        label_features = [{"input_ids": feature["labels"]} for feature in features]
        batch = self.processor.pad(input_features, padding="longest", pad_to_multiple_of=None, return_tensors="pt")
        labels_batch = self.processor.pad(labels=label_features, padding="longest", pad_to_multiple_of=None,
                                          return_tensors="pt")
        labels = labels_batch["input_ids"].masked_fill(labels_batch.attention_mask.ne(1), -100)
        batch["labels"] = labels
        if "attention_mask" in batch:
            batch["attention_mask"] = batch["attention_mask"].to(torch.long)
        return batch


data_collator = DataCollatorCTCWithPadding(processor=processor,
                                           feature_extractor_input_name=feature_extractor_input_name)


def mean_loss():
    batch = data_collator([vectorized_datasets["train"][i] for i in range(len(vectorized_datasets["train"]))])
    with torch.no_grad():
        return model.eval()(**batch).loss.item()


loss_before = mean_loss()
before = {name: p.detach().clone() for name, p in model.named_parameters()}
training_args = TrainingArguments(
    output_dir=output_dir, do_train=True, per_device_train_batch_size=2, max_steps=6, learning_rate=3e-3,
    warmup_steps=0, logging_steps=1, save_strategy="no", report_to="none", use_cpu=True, seed=0, disable_tqdm=True,
    dataloader_num_workers=0,
)
trainer = Trainer(model=model, data_collator=data_collator, args=training_args,
                  train_dataset=vectorized_datasets["train"], eval_dataset=vectorized_datasets["eval"],
                  processing_class=processor)

# 8. training: a local --model_name_or_path folder would be resumed from as a checkpoint; a Hub id is not
checkpoint = model_name_or_path if os.path.isdir(model_name_or_path) else None
trainer.train(resume_from_checkpoint=checkpoint)
trainer.save_model()

# not the script's: the fine-tuned folder as an ASR pipeline, in this process that cannot import the package
transcribe = pipeline("automatic-speech-recognition", model=output_dir, trust_remote_code=True)
transcript = transcribe(np.asarray(rows[0]["audio"]["array"], dtype=np.float32))["text"]
json.dump({
    "config_tokenizer_class": config_tokenizer_class,
    "pretrained_processor": pretrained_processor,
    "hubert_processor": hubert_processor,
    "tokenizer_4x": tokenizer_4x,
    "tokenizer": type(tokenizer).__name__,
    "processor": type(processor).__name__,
    "model": f"{type(model).__module__}.{type(model).__name__}",
    "vocab": vocab_dict,
    "checkpoint": checkpoint,
    "losses": [entry["loss"] for entry in trainer.state.log_history if "loss" in entry],
    "loss_before": loss_before,
    "loss_after": mean_loss(),
    "changed": sorted(name for name, p in model.named_parameters() if not torch.equal(p, before[name])),
    "frozen": sorted(name for name, p in model.named_parameters() if not p.requires_grad),
    "imported": sorted(m for m in sys.modules if m.startswith("hf_corrdistill") and sys.modules[m] is not None),
    "saved": sorted(os.listdir(output_dir)),
    "transcript": transcript,
}, open(report, "w"))
'''


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory) -> Path:
    """A Hugging Face cache holding the staged upload of a tiny student in both formats, as the Hub repositories
    `org/tiny-student-native` and `org/tiny-student-hubert` at one revision."""
    root = tmp_path_factory.mktemp("stock-ctc")
    student = save_tiny_student(root / "student")
    cache = root / "hub"
    for export_format in ("native", "hubert"):
        name = f"tiny-student-{export_format}"
        staged = root / f"staged-{export_format}"
        stage(student, staged, f"org/{name}", export_format=export_format)
        revision = hashlib.sha1(f"{root}/{name}".encode()).hexdigest()  # 40 hex digits, new for each run
        repo = cache / f"models--org--{name}"
        shutil.copytree(staged, repo / "snapshots" / revision)
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text(revision)
    return cache


@pytest.mark.parametrize("export_format", ["native", "hubert"])
def test_stock_ctc_script_fine_tunes_a_published_student(hub_cache, export_format, tmp_path):
    """`run_speech_recognition_ctc.py --model_name_or_path org/tiny-student-<format> --trust_remote_code --do_train
    --do_eval --output_dir <new folder>`, replayed in a fresh process without this package."""
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "HF_HOME": str(tmp_path / "hf"), "HF_HUB_CACHE": str(hub_cache), "HF_DATASETS_OFFLINE": "1"}
    report = tmp_path / "report.json"
    command = [sys.executable, "-c", SCRIPT, f"org/tiny-student-{export_format}", str(tmp_path / "asr"),
               str(LIBRISPEECH), str(TINY_HUBERT), str(report)]
    # no stdin: a question about remote code fails at once instead of waiting for an answer
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=env,
                            stdin=subprocess.DEVNULL, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    run = json.loads(report.read_text())
    assert run["imported"] == []
    # read as an attribute, as older texts of the script do, the config names the CTC tokenizer in both formats
    assert run["config_tokenizer_class"] == "Wav2Vec2CTCTokenizer"
    assert run["tokenizer"] == run["tokenizer_4x"] == "Wav2Vec2CTCTokenizer"  # the 5.x and the 4.x tokenizer step
    if export_format == "native":  # no vocabulary: the feature extractor, not a TypeError in the tokenizer
        assert run["pretrained_processor"] == "Wav2Vec2FeatureExtractor"
    else:  # a plain HuBERT: whatever transformers gives a pre-trained HuBERT folder
        assert run["pretrained_processor"] == run["hubert_processor"]
    assert run["processor"] == "Wav2Vec2Processor"  # feature extractor and tokenizer: the collator pads both
    if export_format == "native":
        assert run["model"].startswith("transformers_modules.") and run["model"].endswith(".CorrDistillForCTC")
    else:
        assert run["model"] == "transformers.models.hubert.modeling_hubert.HubertForCTC"
    assert run["checkpoint"] is None  # a Hub id: trained from the published weights, not resumed
    assert len(run["losses"]) == 6 and all(0 < loss < float("inf") for loss in run["losses"])
    assert run["loss_after"] < run["loss_before"]
    prefix = "corrdistill" if export_format == "native" else "hubert"
    assert {"lm_head.weight", "lm_head.bias", f"{prefix}.encoder.layers.1.attention.q_proj.weight"} <= set(
        run["changed"]
    )
    assert run["frozen"] and all(".feature_extractor." in name for name in run["frozen"])  # the CNN only
    assert not set(run["frozen"]) & set(run["changed"])
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "tokenizer_config.json",
            "vocab.json"} <= set(run["saved"])
    assert isinstance(run["transcript"], str) and set(run["transcript"]) <= set(run["vocab"]) | {" "}
