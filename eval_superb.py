"""SUPERB keyword spotting, intent classification and ASR, clean and noisy, for several upstreams side by side.

    python eval_superb.py --upstream A --upstream B --tasks ks ic asr --data DIR --noise NOISE --snrs clean 10 0
"""

from hf_corrdistill.superb.eval_cli import main

if __name__ == "__main__":
    main()
