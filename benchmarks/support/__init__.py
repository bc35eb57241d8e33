"""What the benchmark scripts share and what is not itself a benchmark (``make bench`` runs ``benchmarks/*.py``
only): the authors' input pipelines, the environment probe and the ``make gpu-check`` driver."""
