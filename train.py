"""Distil a frozen speech SSL teacher into a small student.

    accelerate launch train.py configs/demo.yaml [--field value ...]
"""

from hf_corrdistill.cli import main

if __name__ == "__main__":
    main()
