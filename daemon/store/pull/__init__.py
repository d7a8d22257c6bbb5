"""Models from the Hugging Face hub: names, the hub's metadata, resumable verified downloads, the pull manager.

A pull is not accelerator work: it never enters the job queue; `PullManager.describe()` feeds the status.
"""
