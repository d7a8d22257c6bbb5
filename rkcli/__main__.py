"""`python -m rk`."""
from rk.app import main

main()
