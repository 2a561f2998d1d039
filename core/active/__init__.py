"""Active learning: acquisition strategies, queue building, the retraining loop and simulation.

Modules: ``strategies`` (scores on probabilities), ``rare`` (cost matrix, risk, rare share),
``diversity`` (k-center greedy), ``cold_start``, ``acquire`` (the batch builder behind every
strategy, ``default`` included), ``label_errors``, ``similar``, ``cache`` (per-version
embeddings and probabilities on disk), ``loop`` (refresh the queue, retrain in the background),
``sim_embed`` + ``simulate`` (``loupe simulate``).
"""
