"""Training a downstream head on cached features, choosing its best step on dev, scoring it on test conditions."""

import copy
import logging
from dataclasses import asdict
from pathlib import Path

import evaluate
import jiwer
import torch
import torch.nn.functional as F
from torch import nn

from .cache import CachedFeatures
from .heads import CTCHead, UtteranceHead, WeightedLayerSum, spec_augment
from .registry import TASKS, HeadSettings
from .tasks import CTC_VOCAB, Item, TaskData

logger = logging.getLogger(__name__)

WER_METRIC = str(Path(__file__).with_name("wer"))


def encode_text(text: str) -> list[int]:
    """Characters -> CTC ids; spaces become the word boundary "|"."""
    return [CTC_VOCAB.index(c) for c in text.replace(" ", "|")]


def greedy_decode(log_probs: torch.Tensor, length: int) -> str:
    """Best path: argmax per frame, repeats merged, blanks removed, "|" -> space."""
    best = log_probs[:length].argmax(-1).tolist()
    chars = [CTC_VOCAB[t] for i, t in enumerate(best) if t != 0 and (i == 0 or t != best[i - 1])]
    return " ".join("".join(chars).replace("|", " ").split())


def word_error_rate(predictions: list[str], references: list[str]) -> float:
    """Corpus WER through `evaluate` (the metric module ships with this package, so it loads offline)."""
    return float(evaluate.load(WER_METRIC).compute(predictions=predictions, references=references))


def word_errors(predictions: list[str], references: list[str]) -> list[list[int]]:
    """[word errors (substitutions + deletions + insertions), reference words] per utterance, by jiwer's alignment,
    the one behind `word_error_rate`: the errors summed over the words summed are the corpus WER."""
    counts = []
    for prediction, reference in zip(predictions, references, strict=True):
        words = jiwer.process_words(reference, prediction)
        counts.append([words.substitutions + words.deletions + words.insertions,
                       words.hits + words.substitutions + words.deletions])
    return counts


class Features(torch.utils.data.Dataset):
    def __init__(self, features: CachedFeatures, items: list[Item]):
        self.features, self.items = features, items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Item]:
        return self.features[index], self.items[index]


def collate(batch: list[tuple[torch.Tensor, Item]]) -> dict:
    hidden = [h for h, _ in batch]
    lengths = torch.tensor([h.shape[1] for h in hidden])  # (B,)
    padded = torch.zeros(len(batch), hidden[0].shape[0], int(lengths.max()), hidden[0].shape[2])  # (B, L, F, D)
    for row, h in enumerate(hidden):
        padded[row, :, : h.shape[1]] = h.float()
    return {"hidden": padded, "lengths": lengths, "labels": torch.tensor([item.labels for _, item in batch]),
            "texts": [item.text for _, item in batch]}


class Downstream(nn.Module):
    """Layer selection (a weighted sum, or the one cached layer) followed by the task's head: an utterance
    classifier, or a CTC head (``asr_size`` wide) with SpecAugment in training."""

    def __init__(self, task: TaskData, num_layers: int, dim: int, layer_norm: bool, asr_size: int):
        super().__init__()
        self.task = task.name
        self.kind = TASKS[task.name].head
        self.featurizer = WeightedLayerSum(num_layers, layer_norm) if num_layers > 1 else None
        if self.kind == "ctc":
            self.head = CTCHead(dim, len(CTC_VOCAB), projection=asr_size, hidden=asr_size)
        else:
            self.head = UtteranceHead(dim, tuple(len(names) for names in task.label_names))

    def forward(self, hidden: torch.Tensor, lengths: torch.Tensor):
        features = self.featurizer(hidden) if self.featurizer is not None else hidden[:, 0]  # (B, F, D)
        if self.kind == "ctc" and self.training:
            features = spec_augment(features, self.generator)
        return self.head(features, lengths)

    def loss(self, batch: dict) -> torch.Tensor:
        outputs = self(batch["hidden"], batch["lengths"])
        if self.kind == "ctc":  # outputs: (B, F, V) log-probs
            targets = [torch.tensor(encode_text(t)) for t in batch["texts"]]
            return F.ctc_loss(outputs.transpose(0, 1), torch.cat(targets).to(outputs.device), batch["lengths"],
                              torch.tensor([len(t) for t in targets]), zero_infinity=True)
        labels = batch["labels"].to(outputs[0].device)  # (B, K)
        return sum(F.cross_entropy(logits, labels[:, k]) for k, logits in enumerate(outputs))


def _to(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


@torch.no_grad()
def score_items(model: Downstream, dataset: Features, device: torch.device,
                batch_size: int = 32) -> tuple[float, list]:
    """(the metric, the outcome of each item in ``dataset``'s order) on ``dataset``: accuracy (every output right:
    IC's three slots) and 1 or 0 per item for an utterance head; corpus WER and [word errors, reference words] per
    item for a CTC head (the errors summed over the words summed are the WER)."""
    model.eval()
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=collate)
    right, predictions, references = [], [], []
    for batch in loader:
        batch = _to(batch, device)
        outputs = model(batch["hidden"], batch["lengths"])
        if model.kind == "ctc":
            predictions += [greedy_decode(o, int(n)) for o, n in zip(outputs.cpu(), batch["lengths"], strict=True)]
            references += batch["texts"]
        else:
            guesses = torch.stack([logits.argmax(-1) for logits in outputs], dim=1)  # (B, K)
            right += (guesses == batch["labels"]).all(dim=1).int().tolist()
    model.train()
    if model.kind == "ctc":
        return word_error_rate(predictions, references), word_errors(predictions, references)
    return sum(right) / len(dataset), right


def score(model: Downstream, dataset: Features, device: torch.device, batch_size: int = 32) -> float:
    """Accuracy (every output right: IC's three slots) of an utterance head, WER of a CTC head, on ``dataset``."""
    return score_items(model, dataset, device, batch_size)[0]


def _sampler(task: TaskData, items: list[Item], samples: int, generator: torch.Generator):
    if TASKS[task.name].sampler == "class_balanced":  # as SUPERB's KS recipe
        counts = torch.bincount(torch.tensor([item.labels[0] for item in items]), minlength=len(task.label_names[0]))
        weights = torch.tensor([1.0 / counts[item.labels[0]] for item in items], dtype=torch.double)
        return torch.utils.data.WeightedRandomSampler(weights, samples, replacement=True, generator=generator)
    return torch.utils.data.RandomSampler(items, num_samples=samples, generator=generator)


def train_head(task: TaskData, train: Features, dev: Features, tests: dict[str, Features], settings: HeadSettings,
               num_layers: int, dim: int, *, layer_norm: bool = False, asr_size: int = 1024, seed: int = 0,
               device: torch.device | None = None) -> dict:
    """Adam with gradient clipping for ``settings.steps`` steps; the dev-best state is scored on every test set:
    ``test`` holds the metric per test set, ``test_items`` each item's outcome (see `score_items`) in its order."""
    device = device or torch.device("cpu")
    torch.manual_seed(seed)
    model = Downstream(task, num_layers, dim, layer_norm, asr_size).to(device)
    model.generator = torch.Generator().manual_seed(seed)
    initial = model.featurizer.normalised_weights().tolist() if model.featurizer is not None else None
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
    batch_size = min(settings.batch_size, len(train))  # a batch never repeats an utterance of a tiny training set
    if batch_size < settings.batch_size:
        logger.warning("%s: %d training utterances, fewer than the batch size: batches of %d", task.name, len(train),
                       batch_size)
    sampler = _sampler(task, train.items, settings.steps * batch_size, torch.Generator().manual_seed(seed))
    loader = torch.utils.data.DataLoader(train, batch_size=batch_size, sampler=sampler, collate_fn=collate)
    spec = TASKS[task.name]
    better = (lambda a, b: a > b) if spec.higher_is_better else (lambda a, b: a < b)
    best, best_step, best_state, history = None, 0, None, []
    model.train()
    for step, batch in enumerate(loader, start=1):
        loss = model.loss(_to(batch, device))  # a scalar
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
        optimizer.step()
        if step % settings.eval_steps == 0 or step == settings.steps:
            dev_score = score(model, dev, device)
            history.append({"step": step, "train_loss": loss.item(), f"dev_{spec.metric}": dev_score})
            logger.info("%s step %d: loss %.4f, dev %s %.4f", task.name, step, loss.item(), spec.metric, dev_score)
            if best is None or better(dev_score, best):
                best, best_step, best_state = dev_score, step, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    scored = {name: score_items(model, dataset, device) for name, dataset in tests.items()}
    result = {
        "metric": spec.metric,
        "dev": best,
        "best_step": best_step,
        "test": {name: metric for name, (metric, _) in scored.items()},
        "test_items": {name: items for name, (_, items) in scored.items()},
        "history": history,
        "settings": asdict(settings),
    }
    if model.featurizer is not None:
        result["layer_weights"] = {"initial": initial, "final": model.featurizer.normalised_weights().tolist()}
    return result
