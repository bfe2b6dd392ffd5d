"""Suite file -> configs and scripts: grid, rendering, the generated-file set, Slurm,
the device pool of run-suite."""
