"""Word error rate as an `evaluate` metric, computed with jiwer over the whole corpus.

Shipped with the package so that ``evaluate.load`` works offline; it computes what the Hub's ``wer`` metric computes:
(substitutions + deletions + insertions) / reference words, summed over all utterances.
"""

import datasets
import evaluate
import jiwer


class WER(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Corpus word error rate (jiwer).",
            citation="",
            inputs_description="predictions: list of str; references: list of str",
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Value("string")}),
        )

    def _compute(self, predictions, references):
        return jiwer.wer(list(references), list(predictions))
