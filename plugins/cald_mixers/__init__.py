"""Built-in sequence mixers: Linformer, Mamba, Mamba2 and bidirectional Mamba2."""
