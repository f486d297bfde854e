"""Defaults of the pruning methods' own settings (pruning/methods.py MethodSpec.options): the fields of
ExperimentConfig that only some methods have. Here, in a module that imports nothing, so the pruner reads the
defaults without importing the config (which imports the pruning registry: a cycle)."""
METHOD_OPTIONS = {"snip_batches": 1, "synflow_rounds": 100, "drop_fraction": 0.3, "density": "erk",
                  "prune_rounds": None,  # None: the method's own default (pruning/iterative.py ITERATIVE)
                  "rewind_epoch": 0}
