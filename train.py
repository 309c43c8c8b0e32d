"""Distil a frozen speech SSL teacher into a small student.

    accelerate launch train.py configs/demo.yaml [--field value ...]
"""

import os

os.environ.setdefault("HF_CORRDISTILL_DEFER_MODELS", "1")  # configuration checks first, model code after them

from hf_corrdistill.training.train_cli import main  # noqa: E402

if __name__ == "__main__":
    main()
