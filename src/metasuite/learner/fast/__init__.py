"""The CPU speed work (fused blocks, stem, task groups): a separate network held to
the reference by tests, so the reference stays readable."""
