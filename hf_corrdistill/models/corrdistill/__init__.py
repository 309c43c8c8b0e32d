"""The student: `CorrDistillConfig` and its models, side by side as transformers keeps a model family.

The two files are self-contained (they import only torch and transformers), because they are copied next to every
saved student so that `trust_remote_code=True` loads it without this package.
"""
