"""Strategy names, importable without loading modAL or scikit-learn (the CLI's argument choices)."""

#: Acquisition strategies of the app's queue.
STRATEGIES = ("default", "random", "least_confidence", "margin", "entropy", "bald", "tta", "cost")
#: Strategies ``loupe simulate`` can compare (``modal`` = modAL's own uncertainty sampling).
SIM_STRATEGIES = ("random", "least_confidence", "margin", "entropy", "cost", "bald", "tta", "modal", "default")
