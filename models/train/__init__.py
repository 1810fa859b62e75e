"""Metric-learning training of the service's embedding model: triplet-style losses, P×K batches, ONNX export.

Split like pytorch-metric-learning into small pieces: ``distances`` (pairwise matrices), ``miners``
(which triplets of a P×K batch to use), ``reducers`` (per-triplet losses → one number), ``losses``.
``python -m models.train --help`` lists the commands (prepare, train, export, evaluate).
"""
