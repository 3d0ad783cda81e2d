"""Programs around the pipeline: format conversion, the training stage, packaging."""
