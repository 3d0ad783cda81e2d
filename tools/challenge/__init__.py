"""Challenge flow: run the toolkit's training/eval (`dj-train`) and package the submission (`dj-pack`)."""
