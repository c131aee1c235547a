"""python -m gpu.bench: see gpu/bench/run.py."""
import sys

from gpu.bench.run import main

sys.exit(main())
