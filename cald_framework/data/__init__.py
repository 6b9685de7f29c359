"""Data tools: generators of local data sets that specs can name (not tasks, not plugins)."""
