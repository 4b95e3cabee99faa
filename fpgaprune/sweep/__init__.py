"""The design-space sweep: Optuna searches pruning, bit widths and reuse factors for the Pareto
front of accuracy against resources, on one machine or many sharing one storage.

    from fpgaprune.sweep.launch import sweep
    front = sweep(cfg, workers=2)          # runs/<name>/sweep/: study.db, trials/, front.json, pareto.png

Modules: space (the `sweep:` section), objectives, storage (Optuna storages and the study),
trial (one trial's config and flow), worker (the loop that claims trials), front (the Pareto
front, table, plot, C-simulation, pick), launch (what `fpgaprune sweep` runs).
"""
