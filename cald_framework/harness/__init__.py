"""``cald eval``: lm-evaluation-harness on teachers and students, with local tasks for offline use."""
