"""`rk top`: the Textual dashboard of the daemon's queue, running job and NPU."""
