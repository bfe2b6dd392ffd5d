"""Data: archives, folder-structure data sets, and tasks as pure functions of (seed, index)."""
