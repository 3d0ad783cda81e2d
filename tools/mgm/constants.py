"""Special ids and strings shared by MGM's tokenizer-side and model-side code.

They are fixed by MGM's data format: prompts carry ``<image>`` which becomes id -200 (never a
vocabulary id) and is expanded inside the model; positions that must not be supervised carry -100
(the ignore index of PyTorch's cross entropy).
"""

IGNORE_INDEX = -100
IMAGE_TOKEN_INDEX = -200
DEFAULT_IMAGE_TOKEN = "<image>"
