"""Publish a distilled student on the Hugging Face Hub: config, weights, preprocessor, model code and a model card,
staged in a temporary folder and uploaded in one commit.

    python -m hf_corrdistill.hub push outputs/demo --repo_id ORG/NAME [--results superb_results/results.json]
        [--export_format native|hubert] [--private] [--commit_message MESSAGE] [--dry_run FOLDER]

`train.py --push_to_hub --hub_model_id ORG/NAME` calls `push_student` on its output folder once training has ended.
``native`` uploads the student with its code (``auto_map``), loadable with ``trust_remote_code=True``; ``hubert``
uploads the backbone as a plain `HubertModel` (no custom code). Checkpoints, optimizer state and training
arguments are never uploaded.
"""

import argparse
import json
import logging
import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData, get_token, is_offline_mode
from huggingface_hub.utils import validate_repo_id
from transformers import AutoConfig, AutoFeatureExtractor

from ..data.sources import SAMPLE_RATE, default_feature_extractor
from ..losses import LOSSES
from ..models.corrdistill.configuration_corrdistill import CorrDistillConfig
from ..superb.registry import hub_task
from ..training.arguments import EXPORT_FORMATS, OPTIMISATION_FIELDS
from ..training.run_record import RUN_CONFIG, read_run_record
from ..utils.fingerprint import file_digest

if TYPE_CHECKING:  # the model code loads when a student does: train.py's start-up checks do not need it
    from ..models.corrdistill.modeling_corrdistill import CorrDistillForPreTraining, CorrDistillModel

logger = logging.getLogger(__name__)

TEMPLATE = Path(__file__).with_name("templates") / "student.md"  # shipped in the package; model_cards/ links to it
TAGS = ["audio", "speech", "hubert", "distilhubert", "distillation", "knowledge-distillation",
        "self-supervised-learning", "correlation-distillation", "hf-corrdistill"]
# Files at the repository's root that an earlier push may have left and this one replaces (the other format's code,
# another weight layout); nothing else in the repository is touched.
STALE_FILES = ["model.safetensors", "model-*-of-*.safetensors", "model.safetensors.index.json", "pytorch_model*.bin",
               "configuration_corrdistill.py", "modeling_corrdistill.py"]
STUDENT_CLASSES = ("CorrDistillForPreTraining", "CorrDistillModel")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class PushError(ValueError):
    """A student, results file or repository name that cannot be published; the message says why."""


def hub_id(value: str | None) -> str | None:
    """``value`` if it names a Hub repository rather than a local path (``hf://datasets/ORG/NAME/...`` gives
    ``ORG/NAME``), else None. ORG/NAME is taken for a local path when ORG is a folder here."""
    if not value:
        return None
    match = re.match(r"^hf://datasets/([^/@]+/[^/@]+)", value)
    if match:
        return match.group(1)
    return value if _HUB_ID.match(value) and not Path(value.split("/")[0]).exists() else None


def check_repo_id(repo_id: str | None) -> str:
    """A repository name of the form ORG/NAME, or a `PushError` saying what is wrong with it."""
    if not repo_id or repo_id.count("/") != 1:
        raise PushError(f"the repository must be named ORG/NAME (a user or organisation, then the model), got "
                        f"{repo_id!r}")
    try:
        validate_repo_id(repo_id)
    except ValueError as error:
        raise PushError(f"invalid repository name {repo_id!r}: {error}") from None
    return repo_id


def check_can_push(token: str | None = None) -> None:
    """Fail now, not after training, when an upload cannot work: offline mode or no token."""
    if is_offline_mode():
        raise PushError("pushing to the Hub is impossible with HF_HUB_OFFLINE=1: unset it, or push later with "
                        "python -m hf_corrdistill.hub push")
    if not (token or get_token()):
        raise PushError("pushing to the Hub needs a token: run `hf auth login` or set HF_TOKEN")


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def load_student(student_dir: str | Path) -> "CorrDistillModel | CorrDistillForPreTraining":
    """The distilled student saved in ``student_dir``, every weight accounted for."""
    from ..models.corrdistill import modeling_corrdistill

    folder = Path(student_dir)
    if not (folder / "config.json").is_file():
        raise PushError(f"{folder} holds no config.json: not a saved student")
    config = AutoConfig.from_pretrained(folder)
    if not isinstance(config, CorrDistillConfig):
        raise PushError(f"{folder} holds a {config.model_type!r} model, not a corrdistill student")
    architecture = (config.architectures or ["CorrDistillModel"])[0]
    if architecture not in STUDENT_CLASSES:
        raise PushError(f"{folder} holds a {architecture}; push publishes distilled students "
                        f"({', '.join(STUDENT_CLASSES)})")
    student_class = getattr(modeling_corrdistill, architecture)
    model, info = student_class.from_pretrained(folder, output_loading_info=True)
    missing = [k for k in info["missing_keys"] if not k.endswith("masked_spec_embed")]
    if missing or info["unexpected_keys"]:
        raise PushError(f"{folder}: weights do not fit the config (missing {missing[:3]}, unexpected "
                        f"{info['unexpected_keys'][:3]})")
    return model.eval()


def _hubert_difference(backbone: "CorrDistillModel", hubert) -> float:
    """Largest absolute difference of all hidden states on one second of fixed random audio."""
    audio = torch.randn(1, SAMPLE_RATE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = backbone(audio, output_hidden_states=True).hidden_states
        theirs = hubert(audio, output_hidden_states=True).hidden_states
    return max(float((a - b).abs().max()) for a, b in zip(ours, theirs, strict=True))


def _write_preprocessor(student_dir: Path, output: Path) -> None:
    """The student's feature extractor (HuBERT Base's if it has none), 16 kHz. It names no processor class:
    `AutoProcessor` picks one from the config's model type (`CorrDistillProcessor`, or HuBERT's for an export)."""
    try:
        extractor = AutoFeatureExtractor.from_pretrained(student_dir)
    except (OSError, ValueError):
        extractor = default_feature_extractor()
    if getattr(extractor, "sampling_rate", None) != SAMPLE_RATE:
        raise PushError(f"{student_dir}: the feature extractor expects {extractor.sampling_rate} Hz, not 16 kHz")
    extractor.save_pretrained(output)


# ------------------------------------------------------------------------------------------------ SUPERB results
def folder_fingerprint(folder: Path) -> str:
    """The fingerprint eval_superb.py records for an upstream loaded from ``folder`` (its weights and config)."""
    files = [p for p in folder.glob("*") if p.suffix in (".safetensors", ".bin") or p.name == "config.json"]
    return file_digest(files)


def superb_results(results_path: str | Path, student_dir: str | Path, upstream: str | None = None) -> dict:
    """Tables and `EvalResult`s of the student from an eval_superb.py ``results.json``.

    The student's upstream is the one evaluated on exactly these weights (same fingerprint), or ``upstream`` by name.
    """
    try:
        report = json.loads(Path(results_path).read_text())
        results, conditions, upstreams = report["results"], report["conditions"], report["upstreams"]
    except (OSError, ValueError, KeyError) as error:
        raise PushError(f"{results_path} is not an eval_superb.py results.json: {error}") from None
    if upstream is None:
        fingerprint = folder_fingerprint(Path(student_dir))
        matches = [name for name, described in upstreams.items() if described.get("fingerprint") == fingerprint]
        if not matches:
            raise PushError(f"{results_path} evaluated no upstream with the weights in {student_dir} (upstreams: "
                            f"{', '.join(upstreams)}); evaluate this student, or name its upstream with "
                            "--results_upstream")
        upstream = matches[0]
    elif upstream not in upstreams:
        raise PushError(f"{results_path} has no upstream {upstream!r} (it has {', '.join(upstreams)})")
    sources = report.get("data", {})
    tables, evals = [], []
    for task, per_upstream in results.items():
        if hub_task(task) is None or upstream not in per_upstream:
            continue
        task_type, task_name = hub_task(task)
        metric = per_upstream[upstream]["metric"]
        recorded = str(sources.get(task, task))
        source = hub_id(recorded) or "/".join(Path(recorded).parts[-2:])  # a local folder: its last two parts
        rows = [{"upstream": name, "student": name == upstream, "dev": _percent(result.get("dev")),
                 "test": [_percent(result["test"].get(c)) for c in conditions]}
                for name, result in per_upstream.items()]
        tables.append({"task": task, "title": task_name, "metric": metric, "source": source, "rows": rows})
        for condition in conditions:
            value = per_upstream[upstream]["test"].get(condition)
            if value is None:
                continue
            evals.append(EvalResult(  # one entry per condition: the Hub groups results by dataset and config
                task_type=task_type, task_name=task_name, dataset_type=hub_id(recorded) or Path(recorded).name,
                dataset_name=f"{source} (test, {condition})", dataset_config=condition, dataset_split="test",
                metric_type=metric, metric_name=f"{'WER' if metric == 'wer' else metric.capitalize()} (%)",
                metric_value=round(100 * value, 2),
            ))
    if not evals:
        raise PushError(f"{results_path} holds no KS, IC or ASR result of upstream {upstream!r}")
    config = report.get("config", {})
    return {"upstream": upstream, "conditions": conditions, "tables": tables, "eval_results": evals,
            "quick": bool(config.get("quick")), "layer": config.get("layer"), "seed": config.get("seed")}


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


# ------------------------------------------------------------------------------------------------------ the card
def _training_rows(run: dict, state: dict | None) -> list[tuple[str, str]]:
    """(setting, value) rows of the run configuration train.py recorded (run_config.json), nothing else."""

    def show(*names: str) -> str:
        return ", ".join(f"{n.removeprefix('data.')} `{json.dumps(run[n])}`" for n in names if n in run)

    rows = [
        ("teacher", show("teacher_name_or_path", "pred_layers", "teacher_dtype", "teacher_attention_mask")),
        ("student", show("student_config", "student_overrides", "init_from_teacher")),
        ("objective", show("loss", *(LOSSES[run["loss"]].fields if run.get("loss") in LOSSES else ()),
                           *(("enhancement_weight", "enhancement_bins") if run.get("enhancement_weight") else ()))),
        ("data", show("data.train_data", "data.train_split", "data.data_config_name", "data.streaming",
                      "data.max_length", "data.min_length")),
        ("views", show("data.views", "data.distortion", "data.noise_sources", "data.impulse_response_dir",
                       "data.view_snr_min", "data.view_snr_max", "data.clean_probability")
         if run.get("data.views", "clean") != "clean" else show("data.views")),
        ("optimisation", show(*OPTIMISATION_FIELDS)),
    ]
    if state and "global_step" in state:
        rows.append(("steps trained", f"`{state['global_step']}` (trainer_state.json)"))
    return [(name, value) for name, value in rows if value]


def model_card(student_dir: str | Path, repo_id: str, *, export_format: str = "native", results: dict | None = None,
               license: str = "apache-2.0", datasets: list[str] | None = None, base_model: str | None = None,
               facts: dict[str, Any] | None = None, template: str | Path = TEMPLATE) -> ModelCard:
    """The model card of the student in ``student_dir``, from ``template`` and the files the folder holds.

    ``datasets`` and ``base_model`` default to the Hub ids among the run's training data and teacher (``[]`` or
    ``""``: none); ``results`` is what `superb_results` returns.
    """
    folder = Path(student_dir)
    run = read_run_record(folder / RUN_CONFIG) if (folder / RUN_CONFIG).is_file() else None  # names of this version
    state = _read_json(folder / "trainer_state.json")
    teacher = (run or {}).get("teacher_name_or_path")
    if base_model is None:
        base_model = hub_id(teacher)
        if base_model:
            logger.info("card: base_model %s (the run's teacher, taken as a Hub id; base_model='' omits it)",
                        base_model)
    if datasets is None:
        sources = [(run or {}).get("data.train_data"), *((run or {}).get("data.noise_sources") or [])]
        datasets = list(dict.fromkeys(filter(None, map(hub_id, sources))))
        if datasets:
            logger.info("card: datasets %s (the run's data that is no local path here, taken as Hub ids; "
                        "datasets=[] omits them)", datasets)
    config = CorrDistillConfig.from_pretrained(folder)
    card_data = ModelCardData(
        license=license, library_name="transformers", pipeline_tag="feature-extraction",
        tags=TAGS, datasets=datasets or None,
        base_model=base_model or None, model_name=repo_id.split("/")[-1],
        eval_results=results["eval_results"] if results else None,
    )
    if not Path(template).is_file():
        raise PushError(f"model card template {template} not found")
    return ModelCard.from_template(
        card_data, template_path=str(template), repo_id=repo_id, model_name=repo_id.split("/")[-1],
        export_format=export_format, teacher=teacher, teacher_hub_id=hub_id(teacher), base_model=base_model,
        loss=(run or {}).get("loss"), views=(run or {}).get("data.views"), config=config,
        pred_layers=list(config.pred_layer_ids), training_rows=_training_rows(run, state) if run else [],
        run_config=json.dumps(run, indent=2, sort_keys=True) if run else None,
        distillation_results=_read_json(folder / "distillation_results.json"), results=results, **(facts or {}),
    )


# ------------------------------------------------------------------------------------------------ stage and push
def stage(student_dir: str | Path, output_dir: str | Path, repo_id: str, *, export_format: str = "native",
          results: str | Path | None = None, results_upstream: str | None = None, license: str = "apache-2.0",
          datasets: list[str] | None = None, base_model: str | None = None,
          template: str | Path = TEMPLATE) -> list[str]:
    """Write into ``output_dir`` exactly what `push_student` uploads; returns the file names."""
    from .export import to_hubert

    check_repo_id(repo_id)
    if export_format not in EXPORT_FORMATS:
        raise PushError(f"export_format must be one of {EXPORT_FORMATS}, got {export_format!r}")
    folder, output = Path(student_dir), Path(output_dir)
    table = superb_results(results, folder, results_upstream) if results else None
    student = load_student(folder)
    backbone = getattr(student, "corrdistill", student)  # the backbone of a ForPreTraining student
    output.mkdir(parents=True, exist_ok=True)
    facts: dict[str, Any] = {"parameters_m": f"{backbone.num_parameters() / 1e6:.2f}"}
    if export_format == "native":
        student.save_pretrained(output)  # registered for the Auto classes: auto_map in config.json, code copied
    else:
        hubert = to_hubert(backbone)
        difference = _hubert_difference(backbone, hubert)
        if difference > 1e-4:
            raise PushError(f"the HubertModel export differs from the student by {difference:.2e}")
        # HuBERT's own CTC tokenizer, named in config.json as the student's config names it: CTC scripts that read
        # `config.tokenizer_class` (transformers 5 configs carry it only when config.json sets it) find it too
        hubert.config.tokenizer_class = "Wav2Vec2CTCTokenizer"
        hubert.save_pretrained(output)
        facts["hubert_difference"] = f"{difference:.1e}"
    _write_preprocessor(folder, output)
    if (folder / RUN_CONFIG).is_file():
        shutil.copyfile(folder / RUN_CONFIG, output / RUN_CONFIG)
    card = model_card(folder, repo_id, export_format=export_format, results=table, license=license,
                      datasets=datasets, base_model=base_model, facts=facts, template=template)
    card.save(output / "README.md")
    return sorted(p.name for p in output.iterdir())


def push_student(student_dir: str | Path, repo_id: str, *, export_format: str = "native",
                 results: str | Path | None = None, results_upstream: str | None = None, private: bool | None = None,
                 commit_message: str | None = None, token: str | None = None, license: str = "apache-2.0",
                 datasets: list[str] | None = None, base_model: str | None = None) -> str:
    """Stage the student in a temporary folder, create the repository if needed and upload it in one commit.

    Returns the commit's URL. Everything is checked and staged before the Hub is contacted.
    """
    check_repo_id(repo_id)
    check_can_push(token)
    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="corrdistill-push-") as staging:
        files = stage(student_dir, staging, repo_id, export_format=export_format, results=results,
                      results_upstream=results_upstream, license=license, datasets=datasets, base_model=base_model)
        api.create_repo(repo_id, private=private, exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id, folder_path=staging, delete_patterns=STALE_FILES,
            commit_message=commit_message or f"Upload corrdistill student ({export_format})",
        )
    logger.info("pushed %s to %s", ", ".join(files), repo_id)
    return str(getattr(commit, "commit_url", commit))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    push = commands.add_parser("push", help="publish a saved student folder")
    push.add_argument("folder", help="a saved student (train.py's output_dir)")
    push.add_argument("--repo_id", required=True, help="ORG/NAME of the model repository (created if missing)")
    push.add_argument("--results", help="an eval_superb.py results.json that evaluated this student")
    push.add_argument("--results_upstream", help="the student's upstream name in --results (default: the upstream "
                      "evaluated on exactly these weights)")
    push.add_argument("--export_format", choices=EXPORT_FORMATS, default="native",
                      help="native: the student and its code (trust_remote_code); hubert: a plain HubertModel")
    push.add_argument("--private", action="store_true", help="create the repository private")
    push.add_argument("--commit_message", help="message of the upload commit")
    push.add_argument("--license", default="apache-2.0", help="license in the card's metadata")
    push.add_argument("--datasets", nargs="*", help="Hub dataset ids for the card (default: those the run used)")
    push.add_argument("--base_model", help="Hub id of the teacher for the card (default: the run's teacher if it is "
                      "a Hub id; '' for none)")
    push.add_argument("--dry_run", metavar="FOLDER", help="write what would be uploaded into FOLDER; upload nothing")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    options = dict(export_format=args.export_format, results=args.results, results_upstream=args.results_upstream,
                   license=args.license, datasets=args.datasets, base_model=args.base_model)
    try:
        if args.dry_run:
            files = stage(args.folder, args.dry_run, args.repo_id, **options)
            logger.info("staged %s in %s (nothing uploaded)", ", ".join(files), args.dry_run)
        else:
            push_student(args.folder, args.repo_id, private=args.private or None,
                         commit_message=args.commit_message, **options)
    except (PushError, OSError) as error:
        raise SystemExit(f"push error: {error}") from None


if __name__ == "__main__":
    main()
