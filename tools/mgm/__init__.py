"""Bundled MGM-2B (Mini-Gemini on Gemma-2B): model, data and training for the challenge stage.

A current-stack (torch 2.x, transformers 5.x) re-implementation of MGM's model and recipe that
loads MGM's published weights and ``mm_projector.bin`` files unchanged. Modules:

* ``constants``         -- the special ids MGM uses (``-200`` image, ``-100`` ignore).
* ``encoders``          -- CLIP tower, OpenCLIP ConvNeXt aux tower, projector, patch info mining.
* ``model``             -- ``MGMConfig`` / ``MGMGemmaForCausalLM`` (registered with the Auto classes).
* ``image_processing``  -- the 768 -> 336 image pipeline (``square`` / ``pad``).
* ``conversation``      -- the ``gemma`` template, ``<image>`` tokenization and label masking.
* ``data``              -- lazy LLaVA-JSON dataset, collator, modality-grouped sampler.
* ``train``             -- ``train_mem.py``-compatible training entry (``dj-mgm-train``).
* ``fidelity``          -- the ``toolkit`` (MGM's numerics, default) and ``fast`` modes.
* ``checkpoint``        -- loading a finetuned checkpoint by MGM's rule (towers from folders).
* ``infer``             -- TextVQA / MMBench answers (``model_vqa_loader`` / ``_mmbench``).
* ``tiny``              -- tiny random MGM ingredients for tests and benchmarks.
"""
