"""SUPERB evaluation parts on their own: WER, decoding, layer weights, noisy copies, heads, arguments."""

import jiwer
import numpy as np
import pytest
import torch

from hf_corrdistill.data.views import NoiseBank, rms_power
from hf_corrdistill.superb.arguments import EvalArguments, parse
from hf_corrdistill.superb.conditions import Condition, NoisyCopies, parse_conditions
from hf_corrdistill.superb.downstream import (
    Features,
    HeadSettings,
    greedy_decode,
    train_head,
    word_error_rate,
    word_errors,
)
from hf_corrdistill.superb.heads import WeightedLayerSum
from hf_corrdistill.superb.tasks import CTC_VOCAB, Item, TaskData

WER_CASES = [
    (["the cat sat on the mat", "hello world"], ["the cat sat on mat", "hello big world"]),
    (["a b c d"], ["x y"]),
    (["one two three", "four"], ["", "four five six"]),
    (["same words here"], ["same words here"]),
    (["YES NO UP", "GO  STOP", "LEFT RIGHT ON OFF", "DOWN"], ["YES UP UP UP", "GO STOP", "LEFT", "DOG CAT WOW"]),
]


@pytest.mark.parametrize("references, predictions", WER_CASES)
def test_wer_equals_jiwer(references, predictions):
    assert word_error_rate(predictions, references) == pytest.approx(jiwer.wer(references, predictions), abs=0)


@pytest.mark.parametrize("references, predictions", WER_CASES)
def test_word_errors_per_item_sum_to_the_corpus_wer(references, predictions):
    counts = word_errors(predictions, references)
    assert [words for _, words in counts] == [len(r.split()) for r in references]
    errors = sum(e for e, _ in counts)
    assert errors / sum(w for _, w in counts) == word_error_rate(predictions, references)  # exactly


def test_word_errors_by_hand():
    counts = word_errors(["the cat sat on mat", "hello big world", "", "x y"],
                         ["the cat sat on the mat", "hello world", "one two", "a b c"])
    assert counts == [[1, 6], [1, 2], [2, 2], [3, 3]]  # a deletion; an insertion; two deletions; 2 subs + 1 del


def test_wer_by_hand():
    # 1 deletion (on "the mat") + 1 insertion ("big") over 8 reference words
    assert word_error_rate(["the cat sat on mat", "hello big world"],
                           ["the cat sat on the mat", "hello world"]) == pytest.approx(2 / 8)


def test_greedy_decode_merges_repeats_and_drops_blanks():
    path = "HH<blank>II||<blank>TT<blank>T"
    tokens = []
    i = 0
    while i < len(path):
        if path.startswith("<blank>", i):
            tokens.append(0)
            i += len("<blank>")
        else:
            tokens.append(CTC_VOCAB.index(path[i]))
            i += 1
    log_probs = torch.full((len(tokens) + 3, len(CTC_VOCAB)), -10.0)
    log_probs[torch.arange(len(tokens)), torch.tensor(tokens)] = 0.0
    assert greedy_decode(log_probs, len(tokens)) == "HI TT"


def test_weighted_sum_starts_uniform():
    summed = WeightedLayerSum(5)
    assert torch.equal(summed.normalised_weights(), torch.full((5,), 0.2))
    hidden = torch.randn(2, 5, 7, 3)  # (B, L, F, D)
    torch.testing.assert_close(summed(hidden), hidden.mean(1))


def _noise(demo_data):
    return NoiseBank([str(demo_data / "noise" / "test")])


def test_noisy_copies_are_bit_identical_and_exact(demo_data):
    clean = np.random.default_rng(0).standard_normal(24_000).astype(np.float32) * 0.1
    first, second = NoisyCopies({"seen": _noise(demo_data)}, seed=3), NoisyCopies({"seen": _noise(demo_data)}, seed=3)
    ten, zero = Condition("seen", 10.0), Condition("seen", 0.0)
    a, b = first(clean, "utt-1", ten), second(clean, "utt-1", ten)
    assert a.tobytes() == b.tobytes()  # same seed and key: the same noisy audio, whatever the upstream
    assert first(clean, "utt-2", ten).tobytes() != a.tobytes()
    assert NoisyCopies({"seen": _noise(demo_data)}, seed=4)(clean, "utt-1", ten).tobytes() != a.tobytes()
    assert 10 * np.log10(rms_power(clean) / rms_power(a - clean)) == pytest.approx(10.0, abs=0.01)
    # the same noise stretch at every SNR: only its level changes
    noise_10, noise_0 = a - clean, first(clean, "utt-1", zero) - clean
    assert abs(np.corrcoef(noise_10, noise_0)[0, 1]) > 0.999
    assert first(clean, "utt-1", Condition()) is clean


def test_conditions_parse():
    names = [c.name for c in parse_conditions(["10", "clean", "0"], unseen=True)]
    assert names == ["clean", "seen@10dB", "seen@0dB", "unseen@10dB", "unseen@0dB"]
    with pytest.raises(ValueError, match="'loud'"):
        parse_conditions(["clean", "loud"], unseen=False)


class _InMemory:
    def __init__(self, tensors):
        self.tensors = tensors

    def __getitem__(self, index):
        return self.tensors[index]

    def __len__(self):
        return len(self.tensors)


def test_utterance_head_fits_a_tiny_training_set():
    """Sanity: 3 layers of noisy features around 12 class prototypes; the head reaches ~100 % on its training set."""
    generator = torch.Generator().manual_seed(0)
    prototypes = torch.randn(12, 16, generator=generator)
    items, tensors = [], []
    for index in range(60):
        label = index % 12
        frames = 20 + index % 7
        tensors.append((prototypes[label] + 0.5 * torch.randn(3, frames, 16, generator=generator)).half())
        items.append(Item(key=str(index), audio={}, labels=(label,)))
    task = TaskData("ks", {"train": items, "dev": items, "test": items}, (tuple(str(i) for i in range(12)),))
    data = Features(_InMemory(tensors), items)
    # the prototypes themselves: labelled right for the first 12 items, wrong for the last 12
    mixed = [Item(key=f"p{i}", audio={}, labels=((i + (i >= 12)) % 12,)) for i in range(24)]
    prototypes = Features(_InMemory([prototypes[i % 12].expand(3, 25, 16).half() for i in range(24)]), mixed)
    result = train_head(task, data, data, {"clean": data, "mixed": prototypes}, HeadSettings(300, 100, 16, 1e-2),
                        num_layers=3, dim=16)
    assert result["test"]["clean"] >= 0.98
    assert result["layer_weights"]["initial"] == pytest.approx([1 / 3] * 3)
    # one outcome per test item, in the items' order, whose mean is the accuracy
    items_clean = result["test_items"]["clean"]
    assert len(items_clean) == len(items) and set(items_clean) <= {0, 1}
    assert sum(items_clean) / len(items_clean) == result["test"]["clean"]
    assert result["test_items"]["mixed"] == [1] * 12 + [0] * 12 and result["test"]["mixed"] == 0.5


def test_ctc_head_records_word_errors_per_item():
    generator = torch.Generator().manual_seed(0)
    texts = ["YES NO UP", "GO STOP", "LEFT RIGHT ON OFF", "DOWN", "BED BIRD", "CAT DOG HAPPY"]
    items = [Item(key=f"u{i}", audio={}, text=text) for i, text in enumerate(texts)]
    tensors = [torch.randn(2, 30 + 4 * i, 8, generator=generator).half() for i in range(len(items))]
    task = TaskData("asr", {"train": items, "dev": items, "test": items})
    data = Features(_InMemory(tensors), items)
    result = train_head(task, data, data, {"clean": data}, HeadSettings(4, 2, 3, 1e-2), num_layers=2, dim=8,
                        asr_size=16)
    counts = result["test_items"]["clean"]
    assert [words for _, words in counts] == [len(text.split()) for text in texts]
    assert all(errors >= 0 for errors, _ in counts)
    assert sum(e for e, _ in counts) / sum(w for _, w in counts) == result["test"]["clean"]


def test_arguments_fail_early():
    with pytest.raises(ValueError, match="--noise"):
        EvalArguments(upstream=["fbank"], snrs=["clean", "10"])
    with pytest.raises(ValueError, match="unknown task"):
        EvalArguments(upstream=["fbank"], snrs=["clean"], tasks=["ks", "sid"])
    with pytest.raises(ValueError, match="TASK=N"):
        EvalArguments(upstream=["fbank"], snrs=["clean"], steps=["ks=ten"])
    args = parse(["--upstream", "a", "--upstream", "b=c", "--tasks", "ks", "--steps", "50", "asr=7", "--quick",
                  "--snrs", "clean"])
    assert args.upstream == ["a", "b=c"] and args.tasks == ["ks"] and args.head_settings["ks"].steps == 50
    assert args.asr_size == 128 and parse(["--upstream", "a", "--snrs", "clean", "--asr_size", "64"]).asr_size == 64
    assert parse(["--upstream", "a", "--quick", "--snrs", "clean"]).head_settings["asr"].steps == 300


def test_learning_rate_per_task():
    rates = {task: s.learning_rate for task, s in parse(["--upstream", "a", "--snrs", "clean"]).head_settings.items()}
    assert rates == {"ks": 1e-4, "ic": 1e-4, "asr": 1e-4}  # SUPERB's
    args = parse(["--upstream", "a", "--snrs", "clean", "--learning_rate", "1e-3", "asr=3e-3"])
    assert {task: s.learning_rate for task, s in args.head_settings.items()} == {"ks": 1e-3, "ic": 1e-3, "asr": 3e-3}
    args = parse(["--upstream", "a", "--snrs", "clean", "--learning_rate", "ic=5e-4"])
    assert [s.learning_rate for s in args.head_settings.values()] == [1e-4, 5e-4, 1e-4]
    for bad in ("ks=fast", "-1e-3", "0", "nan", "sid=1e-3"):
        with pytest.raises(ValueError, match="--learning_rate"):
            EvalArguments(upstream=["fbank"], snrs=["clean"], learning_rate=[bad])


def _tiny(config_class, **extra):
    return config_class(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                        conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, **extra)


@pytest.mark.parametrize("family", ["hubert", "wavlm", "wav2vec2", "data2vec-audio", "corrdistill"])
def test_every_upstream_family_gives_per_utterance_hidden_states(family, tmp_path):
    """Each family through AutoModel; one batched forward pass equals one utterance at a time: a padded batch of
    different lengths where the model allows padding, else a batch of equal lengths (what the cache then forms)."""
    import transformers

    from hf_corrdistill import CorrDistillConfig, CorrDistillModel
    from hf_corrdistill.data.sources import default_feature_extractor
    from hf_corrdistill.superb.upstream import PretrainedUpstream

    torch.manual_seed(0)
    if family == "corrdistill":
        model = CorrDistillModel(CorrDistillConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                                   intermediate_size=64, conv_dim=(16,) * 7,
                                                   num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
                                                   teacher_hidden_size=32, feat_extract_norm="layer"))
    else:
        names = {"hubert": "Hubert", "wavlm": "WavLM", "wav2vec2": "Wav2Vec2", "data2vec-audio": "Data2VecAudio"}
        config = _tiny(getattr(transformers, f"{names[family]}Config"), feat_extract_norm="layer")
        model = getattr(transformers, f"{names[family]}Model")(config)
    model.save_pretrained(tmp_path)
    default_feature_extractor().save_pretrained(tmp_path)
    upstream = PretrainedUpstream(family, str(tmp_path), torch.device("cpu"))
    assert upstream.accepts_padding == (family != "data2vec-audio")  # its positional convolutions see padding
    assert upstream.num_layers == 3 and upstream.hidden_size == 32
    lengths = (8000, 12345) if upstream.accepts_padding else (12345, 12345)
    waves = [np.random.default_rng(i).standard_normal(n).astype(np.float32) for i, n in enumerate(lengths)]
    assert not np.array_equal(waves[0][:8000], waves[1][:8000])
    batched = upstream(waves)  # a single forward pass over both
    if not upstream.accepts_padding:
        with pytest.raises(ValueError, match="equal length"):
            upstream([waves[0][:8000], waves[1]])
    for wave, hidden in zip(waves, batched, strict=True):
        alone = upstream([wave])[0]
        assert hidden.shape == (3, upstream.frames(wave.size), 32) == alone.shape
        torch.testing.assert_close(hidden, alone, atol=1e-4, rtol=1e-4)


def test_group_norm_upstreams_are_never_fed_padding(demo_data):
    from hf_corrdistill.superb.cache import _batches
    from hf_corrdistill.superb.upstream import PretrainedUpstream

    assert not PretrainedUpstream("t", str(demo_data / "tiny_teacher"), torch.device("cpu")).accepts_padding
    assert _batches([16000, 8000, 16000, 8000, 9000], same_length_only=True, max_batch=8) == [[1, 3], [4], [0, 2]]
    assert _batches([16000, 8000, 16000], same_length_only=False, max_batch=2) == [[1, 0], [2]]
