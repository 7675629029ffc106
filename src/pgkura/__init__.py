"""pgkura: backup and point-in-time recovery for PostgreSQL."""

import os

__version__ = "0.1.0"

# pgkura's numpy work is elementwise (page checksums, content-defined chunking), never BLAS. The
# OpenBLAS in numpy's wheels starts a thread per core at import, and each busy-waits for about
# 0.1 s (~40 ms of CPU measured): on a 2-core machine that takes a core from the workers that
# checksum pages. Before numpy's import is the only time this can be set; an explicit value wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
