"""Publishing a student: the staged upload, the model card, `python -m hf_corrdistill.hub push` and train.py's
--push_to_hub. The Hub is never reached: the two `HfApi` calls that would reach it are intercepted."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import save_tiny_student, tiny_student_config, tiny_teacher
from huggingface_hub import EvalResult, HfApi, ModelCard, RepoUrl, constants
from safetensors.torch import load_file
from transformers import AutoModel, AutoProcessor, HubertModel, Wav2Vec2FeatureExtractor

from hf_corrdistill.hub import push as hub
from hf_corrdistill.losses import LOSSES
from hf_corrdistill.superb.upstream import describe_upstream, load_upstream
from hf_corrdistill.training import train_cli as cli
from hf_corrdistill.training.train_cli import parse_args, run_identity

REPO = "org/tiny-student"
PAPER_RUN = [  # the paper's setup, as train.py records it (teacher and training data are Hub ids)
    "--teacher_name_or_path", "facebook/hubert-base-ls960", "--pred_layers", "1", "2", "3", "--views", "setup2",
    "--train_data", "hf://datasets/openslr/librispeech_asr@refs%2Fconvert%2Fparquet/all/train.*/*.parquet",
    "--per_device_train_batch_size", "24", "--learning_rate", "2e-4",
]
NATIVE_FILES = {"README.md", "config.json", "configuration_corrdistill.py", "model.safetensors",
                "modeling_corrdistill.py", "preprocessor_config.json", "run_config.json"}
HUBERT_FILES = {"README.md", "config.json", "model.safetensors", "preprocessor_config.json", "run_config.json"}


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory) -> Path:
    """A tiny student folder as train.py leaves it: model, code, preprocessor, run record, state, a checkpoint."""
    folder = save_tiny_student(tmp_path_factory.mktemp("student"))
    (folder.parent / "musan").mkdir()  # a local noise folder
    args, data = parse_args([*PAPER_RUN, "--noise_sources", str(folder.parent / "musan"), "--output_dir", str(folder)])
    (folder / "run_config.json").write_text(json.dumps(run_identity(args, data), indent=2, sort_keys=True) + "\n")
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": 7, "max_steps": 7}))
    (folder / "training_args.bin").write_bytes(b"pickled arguments")
    (folder / "checkpoint-7").mkdir()
    (folder / "checkpoint-7" / "optimizer.pt").write_bytes(b"optimizer state")
    return folder


@pytest.fixture(scope="module")
def results_json(student_dir, tmp_path_factory) -> Path:
    """An eval_superb.py results.json (report.py's layout) that evaluated the student beside fbank; the upstream
    descriptions come from the evaluation's own code, the scores are made up for the test."""
    described = {"student": describe_upstream(load_upstream("student", str(student_dir), torch.device("cpu"))),
                 "fbank": describe_upstream(load_upstream("fbank", "fbank", torch.device("cpu")))}
    conditions = ["clean", "seen@10dB", "unseen@10dB"]
    scores = {("ks", "student"): [0.75, 0.5, 0.25], ("ks", "fbank"): [0.5, 0.25, 0.125],
              ("asr", "student"): [0.4, 0.6, 0.8], ("asr", "fbank"): [0.9, 1.0, 1.0]}
    results: dict = {"ks": {}, "asr": {}}
    for (task, name), values in scores.items():
        results[task][name] = {"metric": "wer" if task == "asr" else "accuracy", "dev": values[0] / 2,
                               "best_step": 20, "test": dict(zip(conditions, values, strict=True))}
    report = {"config": {"quick": True, "layer": "weighted", "seed": 0}, "seeds": {"noise": 0},
              "conditions": conditions,
              "condition_specs": [{"noise": None, "snr": None}, {"noise": "seen", "snr": 10.0},
                                  {"noise": "unseen", "snr": 10.0}],
              "upstreams": described, "results": results,
              "data": {"ks": "superb/speech_commands_v0.01", "asr": "openslr/librispeech_asr"}}
    path = tmp_path_factory.mktemp("superb") / "results.json"
    path.write_text(json.dumps(report, indent=2))
    return path


@pytest.fixture
def hub_calls(monkeypatch, tmp_path) -> dict[str, list[dict]]:
    """Intercepts `HfApi.upload_folder`, the upload, and `HfApi.create_repo`, which is a network call of its own
    (it creates the repository before the upload); records what they were given. Everything else runs for real."""
    calls: dict[str, list[dict]] = {"create_repo": [], "upload_folder": []}

    def create_repo(self, repo_id, **kwargs):
        calls["create_repo"].append({"repo_id": repo_id, **kwargs})
        return RepoUrl(f"{constants.ENDPOINT}/{repo_id}")

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        kept = tmp_path / f"uploaded-{len(calls['upload_folder'])}"  # the staging folder goes once the call returns
        shutil.copytree(folder_path, kept)
        files = {str(p.relative_to(kept)) for p in kept.rglob("*") if p.is_file()}
        calls["upload_folder"].append({"repo_id": repo_id, "folder": kept, "files": files, **kwargs})
        return f"{constants.ENDPOINT}/{repo_id}/commit/0"

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token_never_sent")
    return calls


def _hidden_states(model, audio: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
    with torch.no_grad():
        return model(audio, attention_mask=mask, output_hidden_states=True).hidden_states


# ---------------------------------------------------------------- what is uploaded
def test_native_push_uploads_student_code_preprocessor_and_card_in_one_commit(student_dir, hub_calls):
    url = hub.push_student(student_dir, REPO, private=True, commit_message="tiny student")
    assert url.endswith(f"{REPO}/commit/0")
    assert hub_calls["create_repo"] == [{"repo_id": REPO, "private": True, "exist_ok": True}]
    (upload,) = hub_calls["upload_folder"]
    assert upload["repo_id"] == REPO and upload["commit_message"] == "tiny student"
    assert upload["files"] == NATIVE_FILES  # no checkpoint, optimizer state or training arguments
    assert upload["delete_patterns"] == hub.STALE_FILES  # what an earlier push of the other format left
    folder = upload["folder"]
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_corrdistill.CorrDistillModel"
    assert config["model_type"] == "corrdistill"
    ours, theirs = load_file(student_dir / "model.safetensors"), load_file(folder / "model.safetensors")
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    preprocessor = json.loads((folder / "preprocessor_config.json").read_text())
    assert "processor_class" not in preprocessor and preprocessor["sampling_rate"] == 16000
    assert isinstance(AutoProcessor.from_pretrained(folder), Wav2Vec2FeatureExtractor)  # no vocabulary, no tokenizer
    audio = torch.randn(1, 16000)
    for mine, loaded in zip(_hidden_states(AutoModel.from_pretrained(student_dir).eval(), audio),
                            _hidden_states(AutoModel.from_pretrained(folder).eval(), audio), strict=True):
        assert torch.equal(mine, loaded)


def test_hubert_push_uploads_a_plain_hubert_with_the_same_hidden_states(student_dir, hub_calls):
    hub.push_student(student_dir, REPO, export_format="hubert")
    (upload,) = hub_calls["upload_folder"]
    assert upload["files"] == HUBERT_FILES  # no custom code
    folder = upload["folder"]
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "hubert" and "auto_map" not in config
    hubert = HubertModel.from_pretrained(folder).eval()
    student = AutoModel.from_pretrained(student_dir).eval()
    audio, mask = torch.randn(2, 16000), torch.ones(2, 16000, dtype=torch.long)
    mask[1, 10000:] = 0
    audio = audio * mask
    valid = student(audio, attention_mask=mask).frame_mask[..., None]
    for mine, plain in zip(_hidden_states(student, audio, mask), _hidden_states(hubert, audio, mask), strict=True):
        assert ((mine - plain).abs() * valid).max() <= 1e-5
    card = (folder / "README.md").read_text()
    assert "plain `HubertModel`" in card and "trust_remote_code" not in card


# ---------------------------------------------------------------- the model card
def test_card_metadata_and_model_index_round_trip(student_dir, results_json, tmp_path):
    files = hub.stage(student_dir, tmp_path / "staged", REPO, results=results_json)
    assert set(files) == NATIVE_FILES
    card = ModelCard.load(tmp_path / "staged" / "README.md")
    data = card.data
    assert data.license == "apache-2.0" and data.library_name == "transformers"
    assert data.pipeline_tag == "feature-extraction"
    assert {"audio", "speech", "hubert", "distillation", "knowledge-distillation", "self-supervised-learning",
            "correlation-distillation"} <= set(data.tags)
    assert data.base_model == "facebook/hubert-base-ls960"  # the run's teacher
    assert data.datasets == ["openslr/librispeech_asr"]  # the run's Hub training data (the noise was a local folder)
    conditions = ["clean", "seen@10dB", "unseen@10dB"]
    expected = {("audio-classification", "superb/speech_commands_v0.01", c): v
                for c, v in zip(conditions, (75.0, 50.0, 25.0), strict=True)}
    expected |= {("automatic-speech-recognition", "openslr/librispeech_asr", c): v
                 for c, v in zip(conditions, (40.0, 60.0, 80.0), strict=True)}
    assert all(isinstance(r, EvalResult) for r in data.eval_results)
    found = {(r.task_type, r.dataset_type, r.dataset_config): r.metric_value for r in data.eval_results}
    assert found == expected
    assert {(r.dataset_config, r.metric_type) for r in data.eval_results} == {
        (c, m) for c in conditions for m in ("accuracy", "wer")}
    body = card.text
    assert "arXiv 2312.12153" in body and "arXiv 2110.01900" in body
    assert "| **student (this model)** | 37.50 | 75.00 | 50.00 | 25.00 |" in body  # dev, then each condition
    assert "| fbank | 45.00 | 90.00 | 100.00 | 100.00 |" in body
    assert "`0.0002`" in body and "`7` (trainer_state.json)" in body  # the recorded configuration, steps trained
    for path in (f'AutoModel.from_pretrained("{REPO}", trust_remote_code=True)', "import hf_corrdistill",
                 "python -m hf_corrdistill.hub.export"):
        assert path in body
    other = hub.model_card(student_dir, REPO, license="mit", datasets=[], base_model="")
    assert other.data.license == "mit" and other.data.datasets is None and other.data.base_model is None
    assert other.data.eval_results is None and "No evaluation results" in other.text


def test_card_shows_every_loss_field_and_reads_records_of_earlier_versions(student_dir, tmp_path):
    """The objective's row lists the registry's fields of the run's loss; a record written before the SNR fields were
    renamed shows its values under the current names."""
    folder = tmp_path / "student"
    shutil.copytree(student_dir, folder)
    record = json.loads((folder / "run_config.json").read_text())
    old = {"snr_low": 11.0, "snr_high": 21.0, "data.snr_min": 12, "data.snr_max": 18}
    record = {k: v for k, v in record.items() if k not in {"weighting_snr_low", "weighting_snr_high",
                                                            "data.view_snr_min", "data.view_snr_max"}} | old
    (folder / "run_config.json").write_text(json.dumps(record))
    body = hub.model_card(folder, REPO).text
    for field in LOSSES["correlation"].fields:
        assert f"{field} `" in body, field
    assert "weighting_snr_low `11.0`" in body and "view_snr_min `12`" in body and "view_snr_max `18`" in body
    assert "snr_low `" not in body.replace("weighting_snr_low `", "")
    objective = next(line for line in body.splitlines() if "loss `" in line)
    assert "enhancement" not in objective  # the term is off: not in the row
    (folder / "run_config.json").write_text(json.dumps(record | {"enhancement_weight": 0.5, "enhancement_bins": 80}))
    assert "enhancement_weight `0.5`, enhancement_bins `80`" in hub.model_card(folder, REPO).text


def test_hub_ids_are_told_from_local_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "musan").mkdir(parents=True)
    assert hub.hub_id("facebook/hubert-base-ls960") == "facebook/hubert-base-ls960"
    assert hub.hub_id("hf://datasets/openslr/librispeech_asr@refs%2Fconvert%2Fparquet/all/*.parquet") == \
        "openslr/librispeech_asr"
    assert hub.hub_id("data/musan") is None and hub.hub_id("data/elsewhere") is None  # "data" is a folder here
    assert hub.hub_id(str(tmp_path / "data")) is None and hub.hub_id("teacher") is None and hub.hub_id(None) is None


def test_results_of_other_weights_are_refused(student_dir, results_json, tmp_path):
    report = json.loads(results_json.read_text())
    report["upstreams"]["student"]["fingerprint"] = "0" * 16  # evaluated before the weights changed
    stale = tmp_path / "results.json"
    stale.write_text(json.dumps(report))
    with pytest.raises(hub.PushError, match="evaluated no upstream with the weights"):
        hub.stage(student_dir, tmp_path / "staged", REPO, results=stale)
    table = hub.superb_results(stale, student_dir, upstream="student")  # named explicitly: taken
    assert table["upstream"] == "student" and len(table["eval_results"]) == 6


# ---------------------------------------------------------------- the command and a process without this package
FRESH = """
import json, sys, torch
sys.modules["hf_corrdistill"] = None  # importable here (editable install): made unimportable
from transformers import AutoModel
folder, card, audio, out = sys.argv[1:]
exec(card)  # the card's first example, with the repository id replaced by the folder
model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
with torch.no_grad():
    torch.save(torch.stack(model(torch.load(audio), output_hidden_states=True).hidden_states), out)
"""


def test_command_stages_a_folder_a_fresh_process_loads_with_remote_code(student_dir, tmp_path):
    staged = tmp_path / "staged"
    hub.main(["push", str(student_dir), "--repo_id", REPO, "--dry_run", str(staged)])
    assert {p.name for p in staged.iterdir()} == NATIVE_FILES
    card = (staged / "README.md").read_text()
    example = re.search(r"```python\n(.*?)```", card, re.S).group(1).replace(f'"{REPO}"', "folder")
    audio = torch.randn(1, 16000)
    torch.save(audio, tmp_path / "audio.pt")
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "HF_HOME": str(tmp_path / "hf")}
    result = subprocess.run([sys.executable, "-c", FRESH, str(staged), example, str(tmp_path / "audio.pt"),
                             str(tmp_path / "h.pt")], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    ours = torch.stack(_hidden_states(AutoModel.from_pretrained(student_dir).eval(), audio))
    # the same weights and code; only the thread count (hence the order of float sums) may differ between processes
    torch.testing.assert_close(torch.load(tmp_path / "h.pt"), ours, rtol=0, atol=1e-5)


def test_command_mistakes_fail_with_one_line(tmp_path, student_dir):
    with pytest.raises(SystemExit, match="push error: .*holds no config.json"):
        hub.main(["push", str(tmp_path), "--repo_id", REPO, "--dry_run", str(tmp_path / "out")])
    with pytest.raises(SystemExit, match="push error: the repository must be named ORG/NAME"):
        hub.main(["push", str(student_dir), "--repo_id", "no-namespace", "--dry_run", str(tmp_path / "out")])


# ---------------------------------------------------------------- train.py --push_to_hub
def _tiny_run(tmp_path: Path) -> list[str]:
    """train.py flags for a two-step run of a tiny teacher on eight one-second noise files."""
    tiny_teacher().save_pretrained(tmp_path / "teacher")
    rng = np.random.default_rng(0)
    (tmp_path / "audio").mkdir()
    for i in range(8):
        sf.write(tmp_path / "audio" / f"{i}.wav", 0.1 * rng.standard_normal(16000).astype(np.float32), 16000)
    overrides = {k: v for k, v in tiny_student_config().to_dict().items()
                 if k in ("hidden_size", "num_attention_heads", "intermediate_size", "conv_dim",
                          "num_conv_pos_embeddings", "num_conv_pos_embedding_groups")}
    return ["--teacher_name_or_path", str(tmp_path / "teacher"), "--train_data", str(tmp_path / "audio"),
            "--student_overrides", json.dumps(overrides), "--pred_layers", "1", "2", "3",
            "--output_dir", str(tmp_path / "run"), "--max_steps", "2", "--save_steps", "1",
            "--per_device_train_batch_size", "4", "--max_length", "16000", "--pool_positions", "5",
            "--report_to", "none", "--dataloader_pin_memory", "false", "--seed", "0"]


def test_train_push_to_hub_pushes_the_final_student_once(tmp_path, hub_calls, monkeypatch):
    pushed = []

    push_student = hub.push_student

    def spy(folder, repo_id, **kwargs):  # records the call, then pushes for real (up to the intercepted upload)
        pushed.append((folder, repo_id, kwargs, sorted(p.name for p in Path(folder).iterdir())))
        return push_student(folder, repo_id, **kwargs)

    monkeypatch.setattr(hub, "push_student", spy)  # train.py imports it from hf_corrdistill.hub.push when it pushes
    cli.main([*_tiny_run(tmp_path), "--push_to_hub", "--hub_model_id", "x/y", "--export_format", "hubert"])
    out = tmp_path / "run"
    ((folder, repo_id, kwargs, present),) = pushed
    assert (folder, repo_id, kwargs["export_format"]) == (str(out), "x/y", "hubert")
    assert {"distillation_results.json", "checkpoint-2", "model.safetensors"} <= set(present)  # at the very end
    # the Trainer itself neither created the repository at start-up nor pushed a checkpoint
    assert [c["repo_id"] for c in hub_calls["create_repo"]] == ["x/y"]
    (upload,) = hub_calls["upload_folder"]
    assert upload["repo_id"] == "x/y" and upload["files"] == HUBERT_FILES
    assert "export_format" not in json.loads((out / "run_config.json").read_text())  # not part of the run
    assert ModelCard.load(upload["folder"] / "README.md").data.base_model is None  # the teacher was a local folder


@pytest.mark.parametrize("extra,message", [
    (["--push_to_hub"], "configuration error: push_to_hub needs hub_model_id"),
    (["--push_to_hub", "--hub_model_id", "nameonly"], "configuration error: the repository must be named ORG/NAME"),
    (["--export_format", "onnx"], "configuration error: .*export_format.*onnx"),
    (["--push_to_hub", "--hub_model_id", "x/y", "--hub_revision", "dev"], "hub_revision is not supported"),
])
def test_push_flag_mistakes_fail_at_start_up(extra, message, tmp_path, hub_calls):
    argv = ["--teacher_name_or_path", str(tmp_path / "teacher"), "--train_data", str(tmp_path / "audio"),
            "--output_dir", str(tmp_path / "run")]
    with pytest.raises(SystemExit, match=message):
        cli.main([*argv, *extra])
    assert not (tmp_path / "run").exists() and not hub_calls["create_repo"]


def test_push_without_a_token_fails_at_start_up(tmp_path, hub_calls, monkeypatch):
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    argv = ["--teacher_name_or_path", str(tmp_path / "teacher"), "--train_data", str(tmp_path / "audio"),
            "--output_dir", str(tmp_path / "run"), "--push_to_hub", "--hub_model_id", "x/y"]
    with pytest.raises(SystemExit, match="needs a token: run `hf auth login` or set HF_TOKEN"):
        cli.main(argv)
    assert not (tmp_path / "run").exists()
