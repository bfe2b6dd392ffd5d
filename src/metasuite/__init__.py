"""metasuite: reproducible experiment suites for MAML++ few-shot meta-learning."""

__version__ = "0.1.0"
