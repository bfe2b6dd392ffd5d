"""How it is run: one start-up path, the builder loop, checkpoints, lock, signals,
distributed ranks, the launcher generated scripts exec, the manifest."""
