"""The pipeline and its listeners: contract, ordering, sinks, limits, reloads, faults, soak."""
