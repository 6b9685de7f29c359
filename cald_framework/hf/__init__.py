"""Students as Hugging Face models: Auto classes, the exported directory, the model card."""
