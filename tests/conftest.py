import os

# forked torch worlds hang if the parent used OpenMP threads (platform.md): set before torch is imported
os.environ.setdefault("OMP_NUM_THREADS", "1")
