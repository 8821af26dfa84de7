"""On top of runs: a sweep as one parent run (the Hydra callback, each job), its summary table and
plot, `expkit compare` and `expkit rerun`. Nothing below imports from here."""
