"""The plans and reports behind ``examples/reproduce_cifar_cpu.py``: ``runs`` (names, result
folders), ``underfit`` (the 10-epoch protocol of issue 7) and ``converged`` (issue 15's)."""
