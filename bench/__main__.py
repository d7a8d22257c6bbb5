"""`python -m bench`: run the suite (see bench/README.md)."""
from bench.run import main

main()
