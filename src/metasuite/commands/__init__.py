"""Sub-commands of the ``metasuite`` CLI, one module each (see :mod:`metasuite.cli`)."""
