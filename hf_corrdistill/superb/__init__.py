"""SUPERB-style evaluation (keyword spotting, intent classification, ASR), clean and noisy, of frozen upstreams."""
