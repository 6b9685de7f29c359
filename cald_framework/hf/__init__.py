"""Students as Hugging Face models: Auto-class registration, the exported directory, the model card."""
