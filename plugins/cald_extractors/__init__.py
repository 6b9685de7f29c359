"""Built-in hidden-state extractors for layerwise distillation."""
