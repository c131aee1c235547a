"""python -m cpu.bench: see cpu/bench/run.py."""
import sys

from cpu.bench.run import main

sys.exit(main())
