"""Local scorers for the challenge's two benchmarks (TextVQA, MMBench).

The organisers score server-side; these reproduce the upstream MGM/LLaVA
scripts so a checkpoint can be judged before it is packed and uploaded.
"""

from .mmbench import load_mmbench, load_predictions, score_mmbench, write_upload_xlsx
from .textvqa import normalize_answer, score_textvqa, soft_score

__all__ = [
    "load_mmbench",
    "load_predictions",
    "normalize_answer",
    "score_mmbench",
    "score_textvqa",
    "soft_score",
    "write_upload_xlsx",
]
