"""cl_bayes: continual-learning benchmarks built around Variational Continual Learning."""

__version__ = "0.1.0"
